"""The model domain's rules at their homes: a training spec's defaults and range (TrainingSpec.requested), the digest
a request id is bound to and the ids a request names (decoding), Predict's selector conflict (serving), the model
GetModelPerformance reports on (tracking), ListAlgorithms' minimum bars (training) and the A/B split (serving)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any, cast

import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from bullant.common.v1 import common_pb2
from bullant.model.v1 import model_pb2
from services.core.errors import DomainError, FailedPrecondition, InvalidArgument, NotFound
from services.core.timeframes import Timeframe
from services.model import decoding
from services.model.forecasting.base import Algorithm
from services.model.forecasting.catalogue import ALGORITHMS
from services.model.forecasting.evaluation import Gate
from services.model.registry.versions import ModelStatus, ModelVersion
from services.model.serving.predictions import ServingArm
from services.model.serving.service import Predictor
from services.model.serving.split import choose_arm, split_point
from services.model.tracking.service import Tracker
from services.model.training.data import minimum_range_bars
from services.model.training.jobs import DEFAULT_HOLDOUT, DEFAULT_SEED, TrainingSpec
from services.model.training.service import TrainingService

JAN, FEB = datetime(2026, 1, 1), datetime(2026, 2, 1)


def _requested(**overrides: Any) -> TrainingSpec:
    arguments: dict[str, Any] = {
        "algorithm": Algorithm.KALMAN,
        "parameters": {},
        "symbol": "DEMO",
        "timeframe": Timeframe.D1,
        "start": None,
        "end": None,
        "holdout_fraction": None,
        "horizon": None,
        "seed": None,
        "auto_retrain": False,
    }
    return TrainingSpec.requested(**{**arguments, **overrides})


def _reason(error: pytest.ExceptionInfo[DomainError]) -> str:
    return error.value.reason


def test_a_requested_spec_fills_in_the_defaults() -> None:
    spec = _requested()
    assert (spec.holdout_fraction, spec.horizon, spec.seed) == (DEFAULT_HOLDOUT, 1, DEFAULT_SEED)
    assert spec.parameters == ALGORITHMS[Algorithm.KALMAN].resolve({})
    given = _requested(holdout_fraction=0.3, horizon=4, seed=0, start=JAN, end=FEB)
    assert (given.holdout_fraction, given.horizon, given.seed, given.start, given.end) == (0.3, 4, 0, JAN, FEB)


def test_a_requested_range_must_start_before_it_ends() -> None:
    with pytest.raises(InvalidArgument) as refused:
        _requested(start=FEB, end=JAN)
    assert _reason(refused) == "INVALID_RANGE"
    with pytest.raises(InvalidArgument) as same:
        _requested(start=JAN, end=JAN)
    assert _reason(same) == "INVALID_RANGE"


def test_a_requested_spec_names_a_bad_parameter_before_a_bad_range() -> None:
    with pytest.raises(InvalidArgument) as refused:
        _requested(parameters={"no_such_parameter": 1}, start=FEB, end=JAN)
    assert _reason(refused) == "UNKNOWN_PARAMETER"


def _train(**fields: Any) -> model_pb2.TrainModelRequest:
    return model_pb2.TrainModelRequest(
        algorithm=model_pb2.ALGORITHM_KALMAN, symbol="demo", timeframe=common_pb2.TIMEFRAME_1D, **fields
    )


def test_a_request_that_spells_out_the_defaults_has_the_same_digest() -> None:
    plain = decoding.training_order(_train(request_id="r-1"))
    spelled = decoding.training_order(
        _train(request_id="r-2", holdout_fraction=DEFAULT_HOLDOUT, evaluation_horizon_bars=1, seed=DEFAULT_SEED)
    )
    assert plain.digest == spelled.digest
    assert (plain.request_id, spelled.request_id) == ("r-1", "r-2")
    assert plain.spec == spelled.spec
    assert plain.spec.symbol == "DEMO"
    assert decoding.training_order(_train(evaluation_horizon_bars=3)).digest != plain.digest
    assert decoding.training_order(_train()).request_id is None


def test_ids_a_request_names() -> None:
    assert decoding.model_id("mdl_0a1b") == "mdl_0a1b"
    with pytest.raises(InvalidArgument):
        decoding.model_id("", "model.model_id")
    with pytest.raises(NotFound) as model:
        decoding.model_id("not an id!")
    assert _reason(model) == "MODEL_NOT_FOUND"
    with pytest.raises(NotFound) as job:
        decoding.job_id("x" * 65)
    assert _reason(job) == "JOB_NOT_FOUND"
    assert decoding.optional_model_id("") == ""


def test_an_update_mask_names_the_settings_to_change() -> None:
    model = model_pb2.Model(model_id="mdl_1", auto_retrain=True, description="d", traffic_fraction=0.25)
    every = decoding.settings_update(model_pb2.UpdateModelRequest(model=model, update_mask=FieldMask(paths=["*"])))
    assert (every.auto_retrain, every.description, every.traffic_fraction) == (True, "d", 0.25)
    one = decoding.settings_update(
        model_pb2.UpdateModelRequest(model=model, update_mask=FieldMask(paths=["description"]))
    )
    assert (one.auto_retrain, one.description, one.traffic_fraction) == (None, "d", None)


async def test_a_pinned_model_cannot_also_require_the_passed_gate() -> None:
    # Refused before anything is read: no store, market or model directory is needed.
    predictor = Predictor(cast(Any, None), cast(Any, None), cast(Any, None), cast(Any, None))
    with pytest.raises(InvalidArgument) as refused:
        await predictor.predict(
            symbol="DEMO",
            timeframe=Timeframe.D1,
            horizon=1,
            level=None,
            request_key="",
            model_id="mdl_1",
            require_passed_gate=True,
        )
    assert _reason(refused) == "MODEL_SELECTOR_CONFLICT"


class _NoProduction:
    async def find(self, *_: object, **__: object) -> list[ModelVersion]:
        return []


async def test_performance_needs_a_model_or_a_series_with_a_production_version() -> None:
    tracker = Tracker(cast(Any, None), cast(Any, None), cast(Any, None), cast(Any, _NoProduction()), cast(Any, None))
    selector: dict[str, Any] = {"horizon": None, "window_size": None, "include_history": False}
    with pytest.raises(InvalidArgument) as missing:
        await tracker.model_performance(model_id="", symbol="DEMO", timeframe=None, **selector)
    assert _reason(missing) == "MISSING_MODEL_SELECTOR"
    with pytest.raises(FailedPrecondition) as untrained:
        await tracker.model_performance(model_id="", symbol="DEMO", timeframe=Timeframe.D1, **selector)
    assert _reason(untrained) == "MODEL_NOT_TRAINED"


def test_algorithms_are_listed_in_order_with_the_bars_a_default_job_needs() -> None:
    first = TrainingService.algorithms(after=0, limit=2)
    assert [item.definition.algorithm for item in first] == [Algorithm.NAIVE, Algorithm.DRIFT]
    rest = TrainingService.algorithms(after=int(Algorithm.DRIFT), limit=100)
    assert [item.definition.algorithm for item in first + rest] == sorted(ALGORITHMS)
    for item in first + rest:
        defaults = item.definition.resolve({})
        assert item.min_training_bars == minimum_range_bars(item.definition, defaults, DEFAULT_HOLDOUT, 1)


def _version(model_id: str, status: ModelStatus, traffic: float = 0.0) -> ModelVersion:
    return ModelVersion(
        model_id=model_id,
        algorithm=Algorithm.KALMAN,
        parameters={},
        symbol="DEMO",
        timeframe=Timeframe.D1,
        training_start=JAN,
        training_end=FEB,
        training_bar_count=31,
        metrics={},
        artifact_path="",
        artifact_sha256="",
        status=status,
        gate=Gate(passed=True, mase=0.9, threshold=0.99, detail=""),
        job_id="job_1",
        seed=0,
        create_time=JAN,
        update_time=JAN,
        traffic_fraction=traffic,
    )


def test_the_split_routes_a_request_key_to_the_same_arm() -> None:
    production = _version("mdl_p", ModelStatus.PRODUCTION)
    candidates = [_version("mdl_b", ModelStatus.CANDIDATE, 0.2), _version("mdl_a", ModelStatus.CANDIDATE, 0.1)]
    point = split_point("key-1", "DEMO", Timeframe.D1)
    assert 0.0 <= point < 1.0
    assert point == split_point("key-1", "DEMO", Timeframe.D1)
    assert point != split_point("key-1", "DEMO", Timeframe.H1)
    # Candidates take their shares of [0, 1) in id order; production serves the rest.
    assert choose_arm(production, candidates, 0.05) == (candidates[1], ServingArm.CANDIDATE)
    assert choose_arm(production, candidates, 0.25) == (candidates[0], ServingArm.CANDIDATE)
    assert choose_arm(production, candidates, 0.35) == (production, ServingArm.PRODUCTION)
    assert choose_arm(production, [replace(candidates[0], traffic_fraction=0.0)], 0.0)[1] is ServingArm.PRODUCTION
