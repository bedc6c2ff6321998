"""The A/B split of Predict: which arm of a series serves a request (deterministic per request key)."""

from __future__ import annotations

import hashlib

from services.core.timeframes import Timeframe
from services.model.registry.versions import ModelVersion
from services.model.serving.predictions import ServingArm


def split_point(request_key: str, symbol: str, timeframe: Timeframe) -> float:
    """Where a request key falls in [0, 1) for the A/B split: a hash, so the same key keeps its arm while the
    split is unchanged, and different series split independently."""
    digest = hashlib.sha256(f"{request_key}\x00{symbol}\x00{int(timeframe)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def choose_arm(
    production: ModelVersion, candidates: list[ModelVersion], point: float
) -> tuple[ModelVersion, ServingArm]:
    """The candidate whose share of [0, 1) holds `point` (candidates in id order), else production."""
    edge = 0.0
    for candidate in sorted(candidates, key=lambda version: version.model_id):
        edge += candidate.traffic_fraction
        if point < edge:
            return candidate, ServingArm.CANDIDATE
    return production, ServingArm.PRODUCTION
