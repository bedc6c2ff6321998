"""The model domain. An RPC is handled in servicer.py (decoding.py and encoding.py convert its messages), its rule
lives in the sub-domain's service.py and domain modules, and it is stored by the sub-domain's store.py:

    registry/  ListModels, GetModel, UpdateModel, PromoteModel, ArchiveModel (versions, rules, artifacts)
    training/  ListAlgorithms, TrainModel, WatchTraining, GetTrainingJob, ListTrainingJobs, CancelTraining
               (jobs, data, the runner and its worker process)
    serving/   Predict (predictions, the A/B split)
    tracking/  GetModelPerformance (performance figures, drift; no store of its own: it reads the versions and
               the recorded predictions)

forecasting/ holds the forecasters and their walk-forward evaluation, scheduler.py the leader job (drift checks,
scheduled retraining, demo models), wiring.py builds it all from the platform's dependencies."""
