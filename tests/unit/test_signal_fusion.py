"""The seed's fusion rule: weights, agreement factors, clamping and grade thresholds."""

from __future__ import annotations

import pytest

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
