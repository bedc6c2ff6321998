"""What a training worker process runs: fit, evaluate walk-forward on the held-out tail, and describe the result in
the registry's terms (metrics under the proto's field names, times of the evaluation window)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from services.model.forecasting.base import Algorithm, FitProgress
from services.model.forecasting.evaluation import Evaluation, fit_and_evaluate
from services.model.training.jobs import JobProgress, Stage
from services.model.training.runner import Trained

# Fraction of the job's progress bar the fit and evaluation take (loading before, saving after).
_FIT_START, _FIT_SPAN = 0.02, 0.95


def _job_progress(update: FitProgress) -> JobProgress:
    return JobProgress(
        stage=Stage(int(update.stage)),
        fraction=_FIT_START + _FIT_SPAN * update.fraction,
        epoch=update.epoch,
        epoch_count=update.epoch_count,
        loss=update.loss,
        validation_loss=update.validation_loss,
        message=update.message,
    )


def metrics_document(evaluation: Evaluation, times: npt.NDArray[np.int64], span: timedelta) -> dict[str, Any]:
    """The evaluation as bullant.model.v1.ModelMetrics field names (times as ISO strings, None where undefined)."""

    def moment(nanoseconds: int) -> str:
        return (datetime(1970, 1, 1) + timedelta(microseconds=nanoseconds // 1000)).isoformat()

    return {
        "horizon_bars": evaluation.horizon,
        "evaluation_start_time": moment(int(times[evaluation.train_count])),
        "evaluation_end_time": moment(int(times[-1]) + int(span.total_seconds() * 1e9)),
        "forecast_count": evaluation.forecast_count,
        "mae": evaluation.mae,
        "rmse": evaluation.rmse,
        "mape": evaluation.mape,
        "mase": evaluation.mase,
        "naive_mae": evaluation.naive_mae,
        # A model that never predicts a change (naive) has no directional accuracy: 0 with the widest interval.
        "directional_accuracy": evaluation.directional_accuracy or 0.0,
        "directional_accuracy_ci_low": evaluation.directional_accuracy_ci_low or 0.0,
        "directional_accuracy_ci_high": (
            1.0 if evaluation.directional_accuracy_ci_high is None else evaluation.directional_accuracy_ci_high
        ),
        "directional_accuracy_ci_level": evaluation.directional_accuracy_ci_level,
        "interval_level": evaluation.level,
        "interval_coverage": evaluation.interval_coverage,
    }


def train_and_evaluate(
    *,
    algorithm: int,
    parameters: Mapping[str, Any],
    closes: npt.NDArray[np.float64],
    times: npt.NDArray[np.int64],
    span: timedelta,
    holdout_fraction: float,
    horizon: int,
    level: float,
    seed: int,
    gate_threshold: float,
    gate_max_pvalue: float,
    progress: Callable[[JobProgress], None],
) -> Trained:
    """Fit `algorithm` on the range's head, score it on the held-out tail and return the artifact, the metrics and
    the promotion gate's verdict."""
    result = fit_and_evaluate(
        Algorithm(algorithm),
        parameters,
        closes,
        holdout_fraction=holdout_fraction,
        horizon=horizon,
        level=level,
        seed=seed,
        gate_threshold=gate_threshold,
        gate_max_pvalue=gate_max_pvalue,
        progress=lambda update: progress(_job_progress(update)),
    )
    return Trained(artifact=result.artifact, metrics=metrics_document(result.evaluation, times, span), gate=result.gate)
