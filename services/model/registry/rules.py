"""Registry rules over the versions of one symbol and timeframe: promotion (with its gate and overrides), archiving
and the mutable settings with the A/B traffic split. Pure functions: the store runs them inside one transaction
with the series' rows locked and writes the versions they return."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from services.core.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from services.model.registry.versions import ModelStatus, ModelVersion, Override

MIN_OVERRIDE_REASON = 10
_SPLIT_TOLERANCE = 1e-9


def model_not_found(model_id: str) -> NotFound:
    return NotFound(
        f"no model version {model_id[:64]!r}", reason="MODEL_NOT_FOUND", metadata={"model_id": model_id[:64]}
    )


def _find(series: list[ModelVersion], model_id: str) -> ModelVersion:
    for version in series:
        if version.model_id == model_id:
            return version
    raise model_not_found(model_id)


def check_override(override_gate: bool, reason: str) -> str | None:
    """The override reason to record, None without an override; OVERRIDE_REASON_REQUIRED when it is too short."""
    if not override_gate:
        return None
    reason = reason.strip()
    if len(reason) < MIN_OVERRIDE_REASON:
        raise InvalidArgument(
            FieldViolation(
                "override_reason", f"say why the gate is overridden (at least {MIN_OVERRIDE_REASON} characters)"
            ),
            reason="OVERRIDE_REASON_REQUIRED",
        )
    return reason


def promote(
    series: list[ModelVersion], model_id: str, now: datetime, *, override: Override | None
) -> list[ModelVersion]:
    """The versions a promotion changes: the version becomes PRODUCTION, the previous production version ARCHIVED,
    every traffic fraction 0. Nothing changes when it already is production. PROMOTION_GATE_FAILED unless the gate
    passed or `override` is given (then it is recorded on the version)."""
    target = _find(series, model_id)
    if target.status is ModelStatus.PRODUCTION:
        return []
    if not target.gate.passed and override is None:
        mase = "undefined" if target.gate.mase is None else f"{target.gate.mase:.4f}"
        raise FailedPrecondition(
            f"{target.gate.detail}; promote with override_gate and a reason to serve it anyway",
            reason="PROMOTION_GATE_FAILED",
            metadata={"mase": mase, "threshold": f"{target.gate.threshold:g}", "model_id": model_id},
        )
    changed = []
    for version in series:
        if version.model_id == model_id:
            changed.append(
                replace(
                    version,
                    status=ModelStatus.PRODUCTION,
                    traffic_fraction=0.0,
                    promoted_time=now,
                    archived_time=None,
                    update_time=now,
                    override=override if override is not None and not version.gate.passed else version.override,
                )
            )
        elif version.status is ModelStatus.PRODUCTION:
            changed.append(
                replace(version, status=ModelStatus.ARCHIVED, traffic_fraction=0.0, archived_time=now, update_time=now)
            )
        elif version.traffic_fraction:
            changed.append(replace(version, traffic_fraction=0.0, update_time=now))
    return changed


def archive(series: list[ModelVersion], model_id: str, now: datetime, *, force: bool) -> list[ModelVersion]:
    """The archived version (nothing when it already is); MODEL_IS_PRODUCTION for the production version unless
    `force`."""
    target = _find(series, model_id)
    if target.status is ModelStatus.ARCHIVED:
        return []
    if target.status is ModelStatus.PRODUCTION and not force:
        raise FailedPrecondition(
            "this is the production version: promote another version first, or archive with force",
            reason="MODEL_IS_PRODUCTION",
            metadata={"model_id": model_id},
        )
    return [
        replace(
            target,
            status=ModelStatus.ARCHIVED,
            traffic_fraction=0.0,
            auto_retrain=False,
            archived_time=now,
            update_time=now,
        )
    ]


def update_settings(
    series: list[ModelVersion],
    model_id: str,
    now: datetime,
    *,
    auto_retrain: bool | None = None,
    description: str | None = None,
    traffic_fraction: float | None = None,
) -> list[ModelVersion]:
    """The version with new settings (None leaves one as it is): MODEL_NOT_CANDIDATE for a traffic fraction on a
    production or archived version, INVALID_TRAFFIC_FRACTION outside [0, 1], TRAFFIC_SPLIT_EXCEEDED when the
    candidates of the series would get more than 1 in total."""
    target = _find(series, model_id)
    changed = target
    if traffic_fraction is not None:
        if not 0.0 <= traffic_fraction <= 1.0:
            raise InvalidArgument(
                FieldViolation("model.traffic_fraction", "must be in [0, 1]"), reason="INVALID_TRAFFIC_FRACTION"
            )
        if target.status is not ModelStatus.CANDIDATE and traffic_fraction > 0.0:
            raise FailedPrecondition(
                f"only a candidate takes a traffic share; this version is {target.status.name.lower()}",
                reason="MODEL_NOT_CANDIDATE",
                metadata={"model_id": model_id},
            )
        others = sum(version.traffic_fraction for version in series if version.model_id != model_id)
        if others + traffic_fraction > 1.0 + _SPLIT_TOLERANCE:
            raise FailedPrecondition(
                f"the candidates of {target.symbol} would get {others + traffic_fraction:.4g} of the traffic "
                "(at most 1)",
                reason="TRAFFIC_SPLIT_EXCEEDED",
                metadata={"other_candidates": f"{others:g}"},
            )
        changed = replace(changed, traffic_fraction=traffic_fraction)
    if auto_retrain is not None:
        changed = replace(changed, auto_retrain=auto_retrain)
    if description is not None:
        changed = replace(changed, description=description)
    if changed == target:
        return []
    return [replace(changed, update_time=now)]
