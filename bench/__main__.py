"""Run every benchmark and print the ratios (make bench)."""

from __future__ import annotations

import argparse
import asyncio

from bench import backtest, gateway, indicators, live_signals, model, runtime_overhead, stream_ticks


async def _run(quick: bool) -> None:
    await runtime_overhead.run(quick=quick)
    print()
    await stream_ticks.run(quick=quick)
    print()
    await live_signals.run(quick=quick)
    print()
    await gateway.run(quick=quick)
    print()
    indicators.run(quick=quick)
    print()
    backtest.run(quick=quick)
    print()
    await model.run(quick=quick)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations, for a smoke run")
    args = parser.parse_args()
    asyncio.run(_run(args.quick))


if __name__ == "__main__":
    main()
