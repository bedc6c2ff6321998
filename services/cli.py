"""The `bullant` command: serve some or all services, print the version."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from importlib import metadata

from services.bootstrap import build_server
from services.core.logging import configure_logging
from services.core.server import GrpcServer, ServerError, serve_until_signal
from services.core.settings import SERVICE_NAMES, SettingsError, load_settings

log = logging.getLogger("bullant.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bullant", description="Bullant, an AI trading platform backend.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve gRPC services on one port",
        description="Serve the named services (or `all`) on one gRPC port until SIGTERM/SIGINT.",
    )
    serve.add_argument(
        "services",
        nargs="+",
        metavar="SERVICE",
        help=f"`all` or any of: {', '.join(SERVICE_NAMES)}",
    )
    serve.add_argument("--host", help="address to listen on (BULLANT_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="gRPC port, 0 picks a free one (BULLANT_PORT, default 50051)")
    serve.add_argument(
        "--metrics-port",
        type=int,
        help="Prometheus /metrics port, 0 picks a free one, -1 disables (BULLANT_METRICS_PORT, default 9464)",
    )
    serve.add_argument("--grace", type=float, help="seconds to drain calls on shutdown (BULLANT_GRACE_SECONDS)")

    commands.add_parser("version", help="print the version")
    return parser


def _service_names(requested: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    if "all" in requested:
        if len(requested) > 1:
            parser.error("`all` cannot be combined with service names")
        return list(SERVICE_NAMES)
    unknown = [name for name in requested if name not in SERVICE_NAMES]
    if unknown:
        parser.error(f"unknown service {', '.join(unknown)}; choose from all, {', '.join(SERVICE_NAMES)}")
    return list(dict.fromkeys(requested))


def version_text() -> str:
    """`bullant 0.1.0 (grpcio 1.85.1, protobuf 7.36.2, python 3.11.7)`."""
    versions = ", ".join(f"{pkg} {metadata.version(pkg)}" for pkg in ("grpcio", "protobuf"))
    python = ".".join(str(part) for part in sys.version_info[:3])
    return f"bullant {metadata.version('bullant')} ({versions}, python {python})"


def _announce(server: GrpcServer) -> None:
    # Printed (not only logged) so a person running `make run` sees where to point grpcurl.
    names = ", ".join(r.name for r in server.registrations)
    metrics = f", metrics on :{server.metrics_port}/metrics" if server.metrics_port else ""
    print(f"bullant: serving {names} on {server.address}{metrics}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `bullant` command; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        print(version_text())
        return 0

    names = _service_names(args.services, parser)
    overrides = {
        key: value
        for key, value in (
            ("host", args.host),
            ("port", args.port),
            ("metrics_port", args.metrics_port),
            ("grace_seconds", args.grace),
        )
        if value is not None
    }
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        print(f"bullant: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    server = build_server(settings, names)
    try:
        asyncio.run(serve_until_signal(server, on_started=_announce))
    except ServerError as exc:
        print(f"bullant: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
