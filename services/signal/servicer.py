"""gRPC adapter of bullant.signal.v1.SignalService: each method decodes its request, calls one use case of the
service layer (services/signal/service/) and encodes the answer. Rules live in the service layer and the domain
types; the domain errors it raises are mapped to status codes by the error interceptor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from bullant.common.v1 import common_pb2
from bullant.signal.v1 import signal_pb2, signal_pb2_grpc
from services.core.auth.identity import require_identity
from services.core.parameter_messages import decode_parameters
from services.signal.alerts.encoding import alert_draft, alert_message, update_paths
from services.signal.backtests.encoding import (
    backtest_message,
    backtest_request,
    full_view,
    progress_message,
    stored_config,
)
from services.signal.backtests.spec import BacktestSpec
from services.signal.backtests.store import BacktestFilter, BacktestRecord, BacktestState
from services.signal.encoding import (
    bars_request,
    evaluation_message,
    indicator_message,
    indicator_requests,
    indicator_values_message,
    strategy_message,
)
from services.signal.live.encoding import signal_message
from services.signal.live.requests import performance_message, performance_query, signal_query, stream_request
from services.signal.service.alerts import Alerts
from services.signal.service.backtests import Backtests, Submission
from services.signal.service.catalogue import Catalogue
from services.signal.service.live import Heartbeat, LiveSignals

SERVICE = signal_pb2.DESCRIPTOR.services_by_name["SignalService"]
Context = grpc.aio.ServicerContext[Any, Any]


def _heartbeat() -> signal_pb2.StreamSignalsResponse:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return signal_pb2.StreamSignalsResponse(heartbeat=common_pb2.Heartbeat(server_time=stamp))


class SignalServicer(signal_pb2_grpc.SignalServiceServicer):
    """bullant.signal.v1.SignalService over the signal domain's four facades."""

    def __init__(self, catalogue: Catalogue, backtests: Backtests, alerts: Alerts, live: LiveSignals) -> None:
        self._catalogue = catalogue
        self._backtests = backtests
        self._alerts = alerts
        self._live = live

    # -- indicators and strategies ----------------------------------------------------------------------------------

    async def ListIndicators(
        self, request: signal_pb2.ListIndicatorsRequest, context: Context
    ) -> signal_pb2.ListIndicatorsResponse:
        page = await self._catalogue.indicators(size=request.page_size, page_token=request.page_token)
        return signal_pb2.ListIndicatorsResponse(
            indicators=[indicator_message(item) for item in page.items], next_page_token=page.next_page_token
        )

    async def ComputeIndicators(
        self, request: signal_pb2.ComputeIndicatorsRequest, context: Context
    ) -> signal_pb2.ComputeIndicatorsResponse:
        values = await self._catalogue.compute_indicators(bars_request(request), indicator_requests(request.indicators))
        return indicator_values_message(values)

    async def ListStrategies(
        self, request: signal_pb2.ListStrategiesRequest, context: Context
    ) -> signal_pb2.ListStrategiesResponse:
        page = await self._catalogue.strategies(tag=request.tag, size=request.page_size, page_token=request.page_token)
        return signal_pb2.ListStrategiesResponse(
            strategies=[strategy_message(item) for item in page.items], next_page_token=page.next_page_token
        )

    async def EvaluateStrategy(
        self, request: signal_pb2.EvaluateStrategyRequest, context: Context
    ) -> signal_pb2.EvaluateStrategyResponse:
        evaluation = await self._catalogue.evaluate_strategy(
            request.strategy_id, bars_request(request), decode_parameters(request.parameters)
        )
        return evaluation_message(evaluation)

    # -- backtests --------------------------------------------------------------------------------------------------

    async def RunBacktest(
        self, request: signal_pb2.RunBacktestRequest, context: Context
    ) -> AsyncIterator[signal_pb2.RunBacktestResponse]:
        owner = require_identity().ref
        spec = BacktestSpec.of(backtest_request(request.config))
        stored = stored_config(request.config, spec)
        submission = Submission(
            spec=spec, config=stored.text, digest=stored.digest, request_id=request.request_id or None
        )
        # Closed with the call, so the run's watch ends with it.
        async with aclosing(self._backtests.run(owner, submission)) as updates:
            async for backtest_id, update in updates:
                if isinstance(update, BacktestRecord):
                    message = backtest_message(update, full=True)
                    yield signal_pb2.RunBacktestResponse(backtest_id=backtest_id, backtest=message)
                else:
                    yield signal_pb2.RunBacktestResponse(backtest_id=backtest_id, progress=progress_message(update))

    async def CancelBacktest(
        self, request: signal_pb2.CancelBacktestRequest, context: Context
    ) -> signal_pb2.CancelBacktestResponse:
        record = await self._backtests.cancel(require_identity().ref, request.backtest_id)
        return signal_pb2.CancelBacktestResponse(backtest=backtest_message(record, full=False))

    async def GetBacktest(
        self, request: signal_pb2.GetBacktestRequest, context: Context
    ) -> signal_pb2.GetBacktestResponse:
        full = full_view(request.view, default=True)
        record = await self._backtests.get(require_identity().ref, request.backtest_id, full=full)
        return signal_pb2.GetBacktestResponse(backtest=backtest_message(record, full=full))

    async def ListBacktests(
        self, request: signal_pb2.ListBacktestsRequest, context: Context
    ) -> signal_pb2.ListBacktestsResponse:
        owner = require_identity().ref
        full = full_view(request.view, default=False)
        filters = BacktestFilter(
            strategy_id=request.strategy_id.strip(),
            symbol=request.symbol.strip().upper(),
            state=BacktestState(request.state) if request.state else None,
        )
        page = await self._backtests.find(
            owner, filters, size=request.page_size, page_token=request.page_token, full=full
        )
        return signal_pb2.ListBacktestsResponse(
            backtests=[backtest_message(record, full=full) for record in page.items],
            next_page_token=page.next_page_token,
        )

    # -- alerts -----------------------------------------------------------------------------------------------------

    async def CreateAlert(
        self, request: signal_pb2.CreateAlertRequest, context: Context
    ) -> signal_pb2.CreateAlertResponse:
        rule = await self._alerts.create(
            require_identity().ref, alert_draft(request.alert), request_id=request.request_id or None
        )
        return signal_pb2.CreateAlertResponse(alert=alert_message(rule))

    async def ListAlerts(
        self, request: signal_pb2.ListAlertsRequest, context: Context
    ) -> signal_pb2.ListAlertsResponse:
        page = await self._alerts.find(
            require_identity().ref,
            symbol=request.symbol,
            enabled=request.enabled if request.HasField("enabled") else None,
            size=request.page_size,
            page_token=request.page_token,
        )
        return signal_pb2.ListAlertsResponse(
            alerts=[alert_message(rule) for rule in page.items], next_page_token=page.next_page_token
        )

    async def GetAlert(self, request: signal_pb2.GetAlertRequest, context: Context) -> signal_pb2.GetAlertResponse:
        return signal_pb2.GetAlertResponse(
            alert=alert_message(await self._alerts.get(require_identity().ref, request.alert_id))
        )

    async def UpdateAlert(
        self, request: signal_pb2.UpdateAlertRequest, context: Context
    ) -> signal_pb2.UpdateAlertResponse:
        rule = await self._alerts.update(
            require_identity().ref,
            request.alert.alert_id,
            alert_draft(request.alert),
            update_paths(list(request.update_mask.paths)),
        )
        return signal_pb2.UpdateAlertResponse(alert=alert_message(rule))

    async def DeleteAlert(
        self, request: signal_pb2.DeleteAlertRequest, context: Context
    ) -> signal_pb2.DeleteAlertResponse:
        await self._alerts.delete(require_identity().ref, request.alert_id, allow_missing=request.allow_missing)
        return signal_pb2.DeleteAlertResponse()

    # -- live signals -----------------------------------------------------------------------------------------------

    # Yields pre-encoded bytes as well as messages (which the generated base's signature does not know); the wiring
    # installs a serializer that passes bytes through.
    async def StreamSignals(  # type: ignore[override]
        self, request: signal_pb2.StreamSignalsRequest, context: Context
    ) -> AsyncIterator[signal_pb2.StreamSignalsResponse | bytes]:
        # Closed with the call, so the stream leaves the hub and the watch at once.
        async with aclosing(self._live.stream(require_identity().ref, stream_request(request))) as items:
            async for item in items:
                yield _heartbeat() if isinstance(item, Heartbeat) else item

    async def ListSignals(
        self, request: signal_pb2.ListSignalsRequest, context: Context
    ) -> signal_pb2.ListSignalsResponse:
        page = await self._live.find(
            require_identity().ref, signal_query(request), size=request.page_size, page_token=request.page_token
        )
        return signal_pb2.ListSignalsResponse(
            signals=[signal_message(signal) for signal in page.items], next_page_token=page.next_page_token
        )

    async def GetSignal(self, request: signal_pb2.GetSignalRequest, context: Context) -> signal_pb2.GetSignalResponse:
        return signal_pb2.GetSignalResponse(
            signal=signal_message(await self._live.get(require_identity().ref, request.signal_id))
        )

    async def GetSignalPerformance(
        self, request: signal_pb2.GetSignalPerformanceRequest, context: Context
    ) -> signal_pb2.GetSignalPerformanceResponse:
        page = await self._live.performance(
            performance_query(request), size=request.page_size, page_token=request.page_token
        )
        return signal_pb2.GetSignalPerformanceResponse(
            performances=[performance_message(row) for row in page.items], next_page_token=page.next_page_token
        )
