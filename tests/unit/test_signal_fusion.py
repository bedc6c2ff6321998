"""The seed's fusion rule: weights, agreement factors, clamping and grade thresholds."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bullant.model.v1 import model_pb2
from bullant.signal.v1 import signal_pb2
from services.signal import fusion
from services.signal.fusion import BUY, SELL, Grade, ModelView, TechnicalOnly, fuse, grade

UP, DOWN, FLAT = 1, 2, 3


def _model(confidence: float, direction: int) -> ModelView:
    return ModelView(prediction_id="p", model_id="m", confidence=confidence, direction=direction, expected_return=0.0)


@pytest.mark.parametrize(
    ("side", "technical", "model", "expected", "agrees"),
    [
        (BUY, 0.7, _model(0.6, UP), (0.6 * 0.7 + 0.4 * 0.6) * 1.2, True),
        (BUY, 0.7, _model(0.6, DOWN), (0.6 * 0.7 + 0.4 * 0.6) * 0.8, False),
        (SELL, 0.7, _model(0.6, DOWN), (0.6 * 0.7 + 0.4 * 0.6) * 1.2, True),
        (SELL, 0.5, _model(0.9, FLAT), 0.6 * 0.5 + 0.4 * 0.9, None),
        (BUY, 1.0, _model(1.0, UP), 1.0, True),  # 1.2 clamped to 1
    ],
)
def test_fused_confidence(side: int, technical: float, model: ModelView, expected: float, agrees: bool | None) -> None:
    fused = fuse(side, technical, model)
    assert fused.confidence == pytest.approx(expected)
    assert fused.agrees is agrees
    assert fused.model is model
    assert fused.reason is TechnicalOnly.NONE


def test_technical_only_keeps_the_technical_confidence_and_says_why() -> None:
    fused = fuse(SELL, 0.83, None, TechnicalOnly.MODEL_TIMEOUT)
    assert fused.confidence == 0.83
    assert fused.grade is Grade.STRONG_SELL
    assert fused.model is None
    assert fused.agrees is None
    assert fused.reason is TechnicalOnly.MODEL_TIMEOUT


def test_grades() -> None:
    assert [grade(BUY, value) for value in (0.8, 0.79, 0.6, 0.59, 0.0)] == [
        Grade.STRONG_BUY, Grade.BUY, Grade.BUY, Grade.HOLD, Grade.HOLD,
    ]  # fmt: skip
    assert [grade(SELL, value) for value in (0.95, 0.65, 0.1)] == [Grade.STRONG_SELL, Grade.SELL, Grade.HOLD]


def test_the_rules_numbers_are_the_protos() -> None:
    assert (fusion.DIRECTION_UP, fusion.DIRECTION_DOWN) == (model_pb2.DIRECTION_UP, model_pb2.DIRECTION_DOWN)
    assert {grade.name: int(grade) for grade in Grade} == {
        name.removeprefix("SIGNAL_GRADE_"): number
        for name, number in signal_pb2.SignalGrade.items()
        if number != signal_pb2.SIGNAL_GRADE_UNSPECIFIED
    }
    assert {reason.name: int(reason) for reason in TechnicalOnly if reason is not TechnicalOnly.NONE} == {
        name.removeprefix("TECHNICAL_ONLY_REASON_"): number
        for name, number in signal_pb2.TechnicalOnlyReason.items()
        if number != signal_pb2.TECHNICAL_ONLY_REASON_UNSPECIFIED
    }


def test_the_rule_loads_no_grpc() -> None:
    # The stores import Grade from the rule; the model service's client is services/signal/live/model_fusion.py.
    code = "import sys, services.signal.fusion, services.signal.live.signal_store; print('grpc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
