"""The registry's use cases (ListModels, GetModel, UpdateModel, PromoteModel, ArchiveModel): reads, promotion with
the artifact's checksum verified, archiving and settings, each applied to a symbol and timeframe's versions in one
locked transaction (the rules themselves are in rules.py)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

from services.core.clock import WallClock, utc_now
from services.core.paging import Page, PageTokens, keyset_after, keyset_cursor, keyset_page
from services.model.registry import rules
from services.model.registry.artifacts import read_artifact
from services.model.registry.store import VersionStore
from services.model.registry.versions import ModelFilter, ModelVersion, Override

# What ListModels' page tokens hold.
_MODELS_CURSOR = keyset_cursor("model.ListModels")


class ModelRegistry:
    """Model versions: reads and the admin operations."""

    def __init__(
        self, versions: VersionStore, model_dir: Path, *, pages: PageTokens, clock: WallClock = utc_now
    ) -> None:
        self._store = versions
        self.model_dir = model_dir
        self._pages = pages
        self._clock = clock

    async def get(self, model_id: str) -> ModelVersion:
        version = await self._store.version(model_id)
        if version is None:
            raise rules.model_not_found(model_id)
        return version

    async def find(self, filters: ModelFilter, *, after: tuple[datetime, str] | None, limit: int) -> list[ModelVersion]:
        return await self._store.versions(filters, after=after, limit=limit)

    async def list_models(self, filters: ModelFilter, *, size: int, page_token: str) -> Page[ModelVersion]:
        """ListModels: versions newest first (by create_time, then model_id), a page at a time."""
        numbers = [int(value or 0) for value in (filters.timeframe, filters.algorithm, filters.status)]
        return await keyset_page(
            self._pages,
            _MODELS_CURSOR,
            page_token,
            query="|".join([filters.symbol, *map(str, numbers)]),
            size=size,
            fetch=lambda after, limit: self.find(filters, after=keyset_after(after), limit=limit),
            position=lambda version: {"t": version.create_time, "id": version.model_id},
        )

    async def promote(
        self, model_id: str, *, account_id: int, override_gate: bool, override_reason: str
    ) -> tuple[ModelVersion, str]:
        """Promote a version (see rules.promote); returns it and the id of the version it replaced ("" when
        none, or when nothing changed)."""
        reason = rules.check_override(override_gate, override_reason)
        version = await self.get(model_id)
        await asyncio.to_thread(read_artifact, self.model_dir, version)
        now = self._clock()
        override = Override(account_id=account_id, reason=reason, time=now) if reason is not None else None
        changed = await self._store.update_series(
            version.symbol,
            version.timeframe,
            lambda series: rules.promote(series, model_id, now, override=override),
        )
        promoted = next((item for item in changed if item.model_id == model_id), version)
        previous = next(
            (item.model_id for item in changed if item.model_id != model_id and item.archived_time == now), ""
        )
        return promoted, previous

    async def archive(self, model_id: str, *, force: bool) -> ModelVersion:
        version = await self.get(model_id)
        now = self._clock()
        changed = await self._store.update_series(
            version.symbol, version.timeframe, lambda series: rules.archive(series, model_id, now, force=force)
        )
        return changed[0] if changed else version

    async def update(
        self,
        model_id: str,
        *,
        auto_retrain: bool | None,
        description: str | None,
        traffic_fraction: float | None,
    ) -> ModelVersion:
        version = await self.get(model_id)
        now = self._clock()
        changed = await self._store.update_series(
            version.symbol,
            version.timeframe,
            lambda series: rules.update_settings(
                series,
                model_id,
                now,
                auto_retrain=auto_retrain,
                description=description,
                traffic_fraction=traffic_fraction,
            ),
        )
        return changed[0] if changed else version
