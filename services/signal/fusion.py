"""AI fusion of a technical signal with the model service's prediction, as the seed does it, and only with the
production model of the signal's own symbol and timeframe that passed its promotion gate (beats naive):
fused = (0.6 × technical + 0.4 × model) × 1.2 when the model's direction agrees with the signal's side and × 0.8
when it disagrees (× 1 when the model predicts FLAT), clamped to [0, 1]; the grade is STRONG_<side> at 0.8 and
<side> at 0.6, HOLD below. When the model cannot answer within the deadline the signal is technical-only, says why,
and its fused confidence is the technical one: no number is invented.

The rule is pure (no I/O): the model service's client that feeds it is services/signal/live/model_fusion.py."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

TECHNICAL_WEIGHT, MODEL_WEIGHT = 0.6, 0.4
AGREE, DISAGREE = 1.2, 0.8
STRONG_AT, GRADE_AT = 0.8, 0.6
BUY, SELL = 1, -1
# Numbers of bullant.model.v1.Direction the rule reads (tests/unit/test_signal_fusion.py holds them to the proto).
DIRECTION_UP, DIRECTION_DOWN = 1, 2


class Grade(IntEnum):
    """Numbers of bullant.signal.v1.SignalGrade."""

    STRONG_BUY = 1
    BUY = 2
    HOLD = 3
    SELL = 4
    STRONG_SELL = 5


class TechnicalOnly(IntEnum):
    """Numbers of bullant.signal.v1.TechnicalOnlyReason."""

    NONE = 0
    MODEL_UNAVAILABLE = 1
    MODEL_TIMEOUT = 2
    MODEL_NOT_TRAINED = 3
    FUSION_DISABLED = 4
    MODEL_GATE_NOT_PASSED = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelView:
    """What fusion takes from a prediction."""

    prediction_id: str
    model_id: str
    confidence: float
    direction: int  # bullant.model.v1.Direction
    expected_return: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Fused:
    """A signal's fused confidence and grade; `model` is None when technical-only (then `reason` says why)."""

    confidence: float
    grade: Grade
    model: ModelView | None
    agrees: bool | None
    reason: TechnicalOnly


def grade(side: int, confidence: float) -> Grade:
    """The advice of a side at a confidence."""
    if confidence >= STRONG_AT:
        return Grade.STRONG_BUY if side == BUY else Grade.STRONG_SELL
    if confidence >= GRADE_AT:
        return Grade.BUY if side == BUY else Grade.SELL
    return Grade.HOLD


def fuse(side: int, technical: float, model: ModelView | None, reason: TechnicalOnly = TechnicalOnly.NONE) -> Fused:
    """The seed's fusion rule (see the module docstring)."""
    if model is None:
        technical = min(1.0, max(0.0, technical))
        return Fused(confidence=technical, grade=grade(side, technical), model=None, agrees=None, reason=reason)
    agrees: bool | None = None
    factor = 1.0
    if model.direction in (DIRECTION_UP, DIRECTION_DOWN):
        agrees = (model.direction == DIRECTION_UP) == (side == BUY)
        factor = AGREE if agrees else DISAGREE
    value = (TECHNICAL_WEIGHT * technical + MODEL_WEIGHT * model.confidence) * factor
    value = min(1.0, max(0.0, value)) if math.isfinite(value) else 0.0
    return Fused(confidence=value, grade=grade(side, value), model=model, agrees=agrees, reason=TechnicalOnly.NONE)
