"""The model service: training time per forecasting algorithm on 2,000 daily closes, and Predict latency through
gRPC for a cached ARIMA and LSTM model next to calling the same forecaster in-process.

- training (in-process, no server): for every algorithm, `fit` on all 2,000 closes of a seeded geometric Brownian
  motion and `fit_and_evaluate` (fit on the first 80 %, walk-forward over the held-out 20 % at horizon 1), as a
  training worker runs them. The numeric stack (statsmodels, numba kernels, torch) is loaded by an untimed fit on a
  short series first, so the figures are warm; the median of three runs for the algorithms that take under a
  second, one run for the others.
- serving: the market and model services in one real GrpcServer on loopback (SQLite in a temporary data directory,
  no feeds, authentication on). 2,000 daily bars of two symbols are imported; an ARIMA model is trained through
  TrainModel on one and an LSTM on the other (each in the training worker process; the TrainModel column is the
  wall time to the completed event of WatchTraining) and each is promoted to production with the gate overridden.
  A client in another process (`python -m bench.model --client ...`, so its protobuf work does not take the
  server's CPU) warms up, then issues sequential Predict calls (horizon 5, a new request_key each) with a "read"
  token: p50/p99 of the call's round trip and calls per second, twice. "new": every call asks for another interval
  level, so each one forecasts and records (one INSERT) a new prediction. "repeat": level 0.8 each time, as while
  the latest bar stays the same; a prediction is recorded once per (version, base bar, horizon, level), and the
  replica answers a repeat from the predictions it recorded. The model, the series' versions and the latest 1,000
  bars are cached in the server; the version list (every 2 s) and the bars (every 5 s) are re-read when their
  cache entries expire, inside the measured calls.
- in-process: the same forecaster, loaded with catalogue.load from the artifact bytes the server serves, calling
  `.forecast(closes[-1000:], 5, 0.8)` the same number of times: the floor any serving path pays.

The ratio gRPC / in-process is the serving overhead (authentication, the registry and bar caches, recording the
prediction, encoding, the loopback round trip). The target is a gRPC p99 under 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from bullant.common.v1 import common_pb2
from bullant.market.v1 import market_pb2, market_pb2_grpc
from bullant.model.v1 import model_pb2, model_pb2_grpc
from services.core.parameters import ParamValue

BARS = 2_000
SEED = 20_260_401
START = datetime(2019, 1, 1)
HOLDOUT = 0.2
EVALUATION_HORIZON = 1
HORIZON = 5
LEVEL = 0.8
# The bars Predictor forecasts from (its history_bars).
HISTORY = 1_000
TARGET_P99_MS = 10.0
# Training runs are repeated (median of up to `repeats`) only for algorithms faster than this, in seconds.
REPEAT_BELOW = 1.0
# Algorithms by bullant.model.v1.Algorithm number (the catalogue is imported lazily: the client process needs none
# of the numeric stack).
ALGORITHMS = {1: "naive", 2: "drift", 3: "arima", 4: "lstm", 5: "kalman", 6: "ensemble"}
# (algorithm, symbol, seed of its series) served through Predict.
SERVED = ((3, "BENCHARIMA", SEED), (4, "BENCHLSTM", SEED + 1))
OVERRIDE = "bench: serve regardless of the promotion gate"
ROOT = Path(__file__).resolve().parent.parent
Metadata = tuple[tuple[str, str], ...]


# -- workload --------------------------------------------------------------------------------------------------------


def generate_closes(count: int = BARS, seed: int = SEED) -> np.ndarray:
    """Daily closes of a seeded geometric Brownian motion from 100 (about 8 % drift and 25 % volatility a year)."""
    rng = np.random.default_rng(seed)
    returns = rng.normal(0.08 / 252 - 0.5 * 0.25**2 / 252, 0.25 / np.sqrt(252), count)
    return np.asarray(100.0 * np.exp(np.cumsum(returns)), dtype=np.float64)


def bar_messages(closes: np.ndarray, seed: int = SEED) -> list[market_pb2.Bar]:
    """Valid daily OHLCV bars around `closes`, one per calendar day from START: each opens at the previous close."""
    rng = np.random.default_rng(seed + 1_000)
    opens = np.concatenate(([closes[0]], closes[:-1]))
    spread = 1.0 + np.abs(rng.normal(0.0, 0.005, (2, len(closes))))
    highs = np.maximum(opens, closes) * spread[0]
    lows = np.minimum(opens, closes) / spread[1]
    volumes = rng.integers(100_000, 1_000_000, len(closes))
    bars = []
    for index in range(len(closes)):
        stamp = Timestamp()
        stamp.FromDatetime((START + timedelta(days=index)).replace(tzinfo=UTC))
        bars.append(
            market_pb2.Bar(
                open_time=stamp,
                open=float(opens[index]),
                high=float(highs[index]),
                low=float(lows[index]),
                close=float(closes[index]),
                volume=float(volumes[index]),
            )
        )
    return bars


def training_parameters(algorithm: int, quick: bool) -> dict[str, ParamValue]:
    """Default parameters; with --quick the LSTM trains for at most 10 epochs."""
    return {"epochs": 10} if quick and algorithm == 4 else {}


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# -- training --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrainingTime:
    algorithm: str
    fit: float
    fit_and_evaluate: float
    epochs: int | None


def time_training(closes: np.ndarray, *, quick: bool, repeats: int) -> list[TrainingTime]:
    """Seconds of `fit` on every close and of `fit_and_evaluate`, per algorithm (warm): the median of `repeats`
    runs for an algorithm whose first run takes under REPEAT_BELOW seconds, that run alone for the slower ones."""
    from services.model.forecasting.base import Algorithm  # noqa: PLC0415 - the client process does without
    from services.model.forecasting.catalogue import create  # noqa: PLC0415
    from services.model.forecasting.evaluation import fit_and_evaluate  # noqa: PLC0415

    results = []
    for number, name in ALGORITHMS.items():
        algorithm = Algorithm(number)
        params = training_parameters(number, quick)
        create(algorithm, params).fit(closes[:400], seed=1)  # loads the libraries and the numba kernels
        fits: list[float] = []
        evaluations: list[float] = []
        epochs: int | None = None
        while len(fits) < repeats and (not fits or fits[0] + evaluations[0] < REPEAT_BELOW):
            forecaster = create(algorithm, params)
            started = time.perf_counter()
            forecaster.fit(closes, seed=1)
            fits.append(time.perf_counter() - started)
            epochs = getattr(forecaster, "epochs_run", None)
            started = time.perf_counter()
            fit_and_evaluate(
                algorithm, params, closes, holdout_fraction=HOLDOUT, horizon=EVALUATION_HORIZON, level=LEVEL, seed=1
            )
            evaluations.append(time.perf_counter() - started)
        results.append(TrainingTime(name, statistics.median(fits), statistics.median(evaluations), epochs))
    return results


def in_process_latencies(artifact: bytes, closes: np.ndarray, calls: int, warmup: int) -> list[float]:
    """Seconds per `.forecast(closes[-HISTORY:], HORIZON, LEVEL)` of the forecaster the artifact holds."""
    from services.model.forecasting.catalogue import load  # noqa: PLC0415

    forecaster = load(artifact)
    history = np.ascontiguousarray(closes[-HISTORY:])
    for _ in range(warmup):
        forecaster.forecast(history, HORIZON, LEVEL)
    latencies = []
    for _ in range(calls):
        started = time.perf_counter()
        forecaster.forecast(history, HORIZON, LEVEL)
        latencies.append(time.perf_counter() - started)
    return latencies


# -- the platform ----------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Platform:
    """Market and model services in one GrpcServer on loopback; the model service reads bars from this server."""

    port: int
    model_dir: Path
    admin: Metadata
    reader_token: str


@contextlib.asynccontextmanager
async def running_platform() -> AsyncIterator[Platform]:
    """The platform on a free loopback port with SQLite in a temporary data directory and no feeds."""
    from services.bootstrap import build_authenticator, build_dependencies  # noqa: PLC0415
    from services.core.auth.tokens import TokenIssuer, token_policy  # noqa: PLC0415
    from services.core.server import GrpcServer  # noqa: PLC0415
    from services.core.settings import load_settings  # noqa: PLC0415
    from services.market import wiring as market_wiring  # noqa: PLC0415
    from services.model import wiring as model_wiring  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="bullant-bench-model-") as directory:
        port = _free_port()  # fixed up front: the model service's upstream for bars is this same server
        model_dir = Path(directory) / "models"
        settings = load_settings(
            environ={},
            host="127.0.0.1",
            port=port,
            metrics_port=-1,
            data_dir=Path(directory),
            market_feeds=[],
            model_dir=str(model_dir),
            model_demo_symbols=[],  # config/local.env seeds demo models for feeds this server does not run
        )
        deps = build_dependencies(settings)
        server = GrpcServer(
            settings.server,
            [market_wiring.build(deps), model_wiring.build(deps)],
            lifecycle=deps.lifecycle,
            components=(deps.databases, deps.coordination, deps.clients),
            authenticator=build_authenticator(deps),
        )
        await server.start()
        try:
            assert deps.signing_keys is not None
            issuer = TokenIssuer(deps.signing_keys, token_policy(settings.auth))
            admin, _ = issuer.issue(
                account_id=1, shard=0, roles=["user", "admin"], scopes=["read", "trade", "admin"], session_id="admin"
            )
            reader, _ = issuer.issue(account_id=2, shard=0, roles=["user"], scopes=["read"], session_id="reader")
            yield Platform(port, model_dir, (("authorization", f"Bearer {admin}"),), reader)
        finally:
            await server.stop(grace=0.5)


async def _store(market: market_pb2_grpc.MarketServiceAsyncStub, admin: Metadata, symbol: str, seed: int) -> None:
    await market.CreateInstrument(
        market_pb2.CreateInstrumentRequest(
            instrument=market_pb2.Instrument(
                symbol=symbol, venue="BENCH", asset_class=market_pb2.ASSET_CLASS_CRYPTO, quote_currency="USD"
            )
        ),
        metadata=admin,
    )
    reply = await market.ImportBars(
        market_pb2.ImportBarsRequest(
            symbol=symbol,
            timeframe=common_pb2.TIMEFRAME_1D,
            bars=bar_messages(generate_closes(BARS, seed), seed),
        ),
        metadata=admin,
    )
    if reply.errors:
        raise RuntimeError(f"importing {symbol}: {reply.errors[0]}")


async def _train_and_promote(
    model: model_pb2_grpc.ModelServiceAsyncStub, admin: Metadata, symbol: str, algorithm: int, quick: bool
) -> tuple[model_pb2.Model, float]:
    """The production model of `symbol`, trained through TrainModel (gate overridden), and the seconds from the
    TrainModel call to the completed event."""
    from services.core.parameter_messages import parameter_values  # noqa: PLC0415

    started = time.perf_counter()
    reply = await model.TrainModel(
        model_pb2.TrainModelRequest(
            algorithm=algorithm,  # type: ignore[arg-type]
            symbol=symbol,
            timeframe=common_pb2.TIMEFRAME_1D,
            parameters=parameter_values(training_parameters(algorithm, quick)),
        ),
        metadata=admin,
    )
    last = None
    async for message in model.WatchTraining(model_pb2.WatchTrainingRequest(job_id=reply.job_id), metadata=admin):
        last = message
        if message.WhichOneof("event") in ("completed", "failed", "cancelled"):
            break
    seconds = time.perf_counter() - started
    if last is None or not last.HasField("completed"):
        raise RuntimeError(f"training {ALGORITHMS[algorithm]} on {symbol} did not complete: {last}")
    promoted = await model.PromoteModel(
        model_pb2.PromoteModelRequest(
            model_id=last.completed.model.model_id, override_gate=True, override_reason=OVERRIDE
        ),
        metadata=admin,
    )
    return promoted.model, seconds


def _artifact(model_dir: Path, version: model_pb2.Model) -> bytes:
    data = (model_dir / version.artifact_path).read_bytes()
    if hashlib.sha256(data).hexdigest() != version.artifact_sha256:
        raise RuntimeError(f"the artifact of {version.model_id} fails its checksum")
    return data


async def _client_run(port: int, token: str, symbol: str, calls: int, warmup: int, *, fresh: bool) -> dict[str, Any]:
    """Run the Predict client process once and return its report."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.model",
        "--client",
        f"--port={port}",
        f"--symbol={symbol}",
        f"--calls={calls}",
        f"--warmup={warmup}",
        *(["--fresh"] if fresh else []),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "BENCH_TOKEN": token},
        limit=1 << 24,  # the report is one long line
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=300.0)
        status = await asyncio.wait_for(process.wait(), timeout=30.0)
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    if status != 0 or not line:
        raise RuntimeError(f"the Predict client exited with status {status}")
    result: dict[str, Any] = json.loads(line)
    return result


# -- the client process ----------------------------------------------------------------------------------------------


async def client(port: int, symbol: str, calls: int, warmup: int, *, fresh: bool = False) -> dict[str, Any]:
    """`warmup` Predict calls, then `calls` timed ones in sequence on one channel. With `fresh` every call asks for
    another interval level, so each one forecasts and records a new prediction; otherwise calls repeat the same
    version, base bar, horizon and level, and the replica answers from the predictions it recorded."""
    token = os.environ.get("BENCH_TOKEN", "")
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = model_pb2_grpc.ModelServiceStub(channel)

        def request(index: int) -> model_pb2.PredictRequest:
            return model_pb2.PredictRequest(
                symbol=symbol,
                timeframe=common_pb2.TIMEFRAME_1D,
                horizon_bars=HORIZON,
                interval_level=LEVEL + index * 1e-5 if fresh else LEVEL,
                request_key=f"bench-{index}",
            )

        reply = None
        for index in range(warmup):
            reply = await stub.Predict(request(index), metadata=metadata)
        latencies = []
        began = time.perf_counter()
        for index in range(warmup, warmup + calls):
            message = request(index)
            started = time.perf_counter()
            reply = await stub.Predict(message, metadata=metadata)
            latencies.append(time.perf_counter() - started)
        elapsed = time.perf_counter() - began
    assert reply is not None
    return {
        "latencies_ms": [round(value * 1e3, 4) for value in latencies],
        "elapsed_s": elapsed,
        "model_id": reply.prediction.model_id,
        "points": len(reply.prediction.points),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", action="store_true", help="be the Predict client of a running bench server")
    parser.add_argument("--port", type=int)
    parser.add_argument("--symbol")
    parser.add_argument("--calls", type=int, default=1_000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--fresh", action="store_true", help="a new interval level per call (no repeats)")
    parser.add_argument("--quick", action="store_true", help="fewer calls and shorter training")
    args = parser.parse_args()
    if args.client:
        if args.port is None or not args.symbol:
            parser.error("--client needs --port and --symbol")
        report = asyncio.run(client(args.port, args.symbol, args.calls, args.warmup, fresh=args.fresh))
        print(json.dumps(report), flush=True)
    else:
        asyncio.run(run(quick=args.quick))


# -- the report ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Served:
    algorithm: str
    train_seconds: float
    remote: list[float]  # ms
    rate: float
    local: list[float]  # ms


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    logger = logging.getLogger("bullant")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


async def _serving(quick: bool, calls: int, warmup: int) -> list[Served]:
    results = []
    async with running_platform() as platform:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{platform.port}") as channel:
            market = market_pb2_grpc.MarketServiceStub(channel)
            model = model_pb2_grpc.ModelServiceStub(channel)
            trained = []
            for algorithm, symbol, seed in SERVED:
                await _store(market, platform.admin, symbol, seed)
                version, seconds = await _train_and_promote(model, platform.admin, symbol, algorithm, quick)
                trained.append((algorithm, symbol, seed, version, seconds))
        for algorithm, symbol, seed, version, seconds in trained:
            artifact = _artifact(platform.model_dir, version)
            local = in_process_latencies(artifact, generate_closes(BARS, seed), calls, warmup)
            for fresh in (True, False):
                report = await _client_run(platform.port, platform.reader_token, symbol, calls, warmup, fresh=fresh)
                if report["model_id"] != version.model_id or report["points"] != HORIZON:
                    raise RuntimeError(f"Predict on {symbol} served {report['model_id']}, not {version.model_id}")
                results.append(
                    Served(
                        f"{ALGORITHMS[algorithm]} {'new' if fresh else 'repeat'}",
                        seconds,
                        report["latencies_ms"],
                        calls / report["elapsed_s"],
                        [value * 1e3 for value in local],
                    )
                )
    return results


async def run(quick: bool = False) -> None:
    """Print training seconds per algorithm, then Predict p50/p99 through gRPC and in-process for ARIMA and LSTM,
    their ratio and whether the gRPC p99 is under the target."""
    calls, warmup, repeats = (200, 20, 1) if quick else (1_000, 100, 3)
    with _quiet():
        closes = generate_closes()
        training = await asyncio.to_thread(time_training, closes, quick=quick, repeats=repeats)
        served = await _serving(quick, calls, warmup)

    print(f"== model training: {BARS:,} daily closes (seeded GBM), in-process, warm ==")
    print(f"{'algorithm':>10}{'fit s':>10}{'fit+evaluate s':>17}{'epochs':>8}")
    for item in training:
        epochs = "" if item.epochs is None else str(item.epochs)
        print(f"{item.algorithm:>10}{item.fit:>10.3f}{item.fit_and_evaluate:>17.3f}{epochs:>8}")
    lstm = "; --quick: LSTM at most 10 epochs" if quick else ""
    runs = "one run each"
    if repeats > 1:
        runs = f"the median of {repeats} runs for algorithms under {REPEAT_BELOW:g} s, else one run"
    print(
        f"(fit: on all {BARS:,} closes; fit+evaluate: fit on the first {1 - HOLDOUT:.0%}, walk-forward over the last "
        f"{HOLDOUT:.0%} at horizon {EVALUATION_HORIZON}, as a training job does; default parameters{lstm}; "
        f"{runs})"
    )
    print()
    print(
        f"== model serving: Predict through gRPC (market+model server, loopback, client in another process) vs the "
        f"forecaster in-process; horizon {HORIZON}, {calls:,} sequential calls =="
    )
    print(
        f"{'model':>12}{'TrainModel s':>14}{'gRPC p50/p99 ms':>17}{'calls/s':>9}{'in-process p50/p99 ms':>23}"
        f"{'ratio p50/p99':>16}{f'p99 < {TARGET_P99_MS:g} ms':>14}"
    )
    for row in served:
        p50, p99 = percentile(row.remote, 50), percentile(row.remote, 99)
        l50, l99 = percentile(row.local, 50), percentile(row.local, 99)
        print(
            f"{row.algorithm:>12}{row.train_seconds:>14.2f}{f'{p50:.2f}/{p99:.2f}':>17}{row.rate:>9,.0f}"
            f"{f'{l50:.3f}/{l99:.3f}':>23}{f'{p50 / l50:.1f}x/{p99 / l99:.1f}x':>16}"
            f"{'yes' if p99 < TARGET_P99_MS else 'NO':>14}"
        )
    print(
        f"(TrainModel: wall time to WatchTraining's completed event, worker process included; gRPC: round trip of a "
        f"warm Predict with a read token, model and latest {HISTORY:,} bars cached; new: each call another interval "
        f"level, so it forecasts and records (one SQLite INSERT) a new prediction; repeat: the same version, base bar, "
        f"horizon and level as while the latest bar stays the same, answered from the predictions the replica "
        f"recorded; in-process: forecaster.forecast(closes[-{HISTORY:,}:], {HORIZON}, {LEVEL}) from the same "
        f"artifact; ratio gRPC/in-process = serving overhead)"
    )


if __name__ == "__main__":
    main()
