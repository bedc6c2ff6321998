"""The `bullant` command: serve services, migrate databases, manage admins, print the version."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

from gateway.server import GatewayServer
from services.account.development import DevelopmentTokenRefused, development_token
from services.account.wiring import build_admin_roles
from services.bootstrap import build_server
from services.core.coordination import Coordination, build_backend, keyspace_for
from services.core.db.databases import DatabaseConfig, Databases, describe_error
from services.core.errors import DomainError, InvalidArgument
from services.core.logging import configure_logging
from services.core.server import GrpcServer, serve_until_signal
from services.core.settings import (
    BUILT_SERVICES,
    SERVICE_NAMES,
    Settings,
    SettingsError,
    load_settings,
)
from services.core.startup import StartupError
from services.market.imports import command as importer
from services.market.imports.command import ImportProgressBar
from services.market.records import Timeframe
from services.market.service import normalize_symbol
from services.market.wiring import build_bar_imports
from services.signal.backtests import cli as backtest_cli

log = logging.getLogger("bullant.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bullant",
        description="Bullant, an AI trading platform backend.",
        epilog="`bullant COMMAND --help` shows the options of a command.",
    )
    parser.add_argument("--version", action="version", version=version_text(), help="print the version and exit")
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
    serve.set_defaults(command_parser=serve)
    serve.add_argument("--host", help="address to listen on (BULLANT_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="gRPC port, 0 picks a free one (BULLANT_PORT, default 50051)")
    serve.add_argument(
        "--metrics-port",
        type=int,
        help="Prometheus /metrics port, 0 picks a free one, -1 disables (BULLANT_METRICS_PORT, default 9464)",
    )
    serve.add_argument("--grace", type=float, help="seconds to drain calls on shutdown (BULLANT_GRACE_SECONDS)")
    serve.add_argument(
        "--gateway",
        action="store_true",
        help="also serve the HTTP/WebSocket gateway in front of these services (BULLANT_GATEWAY_PORT, default 8080)",
    )

    gateway = commands.add_parser(
        "gateway",
        help="serve the HTTP/WebSocket gateway alone",
        description="Serve REST and WebSocket for browsers in front of the gRPC services at their upstream addresses "
        "until SIGTERM/SIGINT.",
    )
    gateway.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="SERVICE=HOST:PORT",
        help="where a service is (repeatable; BULLANT_UPSTREAMS); others are at --default-upstream",
    )
    gateway.add_argument("--default-upstream", help="host:port of every other service (BULLANT_DEFAULT_UPSTREAM)")
    gateway.add_argument("--host", help="address to listen on (BULLANT_GATEWAY_HOST, default 127.0.0.1)")
    gateway.add_argument("--port", type=int, help="HTTP port, 0 picks a free one (BULLANT_GATEWAY_PORT, default 8080)")

    migrate = commands.add_parser(
        "migrate",
        help="upgrade every database to the current schema",
        description="Upgrade the global database and every shard to the schema this version expects (idempotent). "
        "Missing MySQL databases are created first.",
    )
    migrate.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if any database is behind the code"
    )

    token = commands.add_parser(
        "token",
        help="print a development access token (local environment only)",
        description="Sign an access token for an account id of your choice with the local development key, to call "
        "authenticated methods (grpcurl, bullant backtest) without registering and logging in. The account need not "
        "exist. Refused outside BULLANT_ENV=local: there, log in (AccountService/Login).",
    )
    token.add_argument("--account-id", type=int, default=1, help="the account the token speaks for (default 1)")
    token.add_argument(
        "--scopes", default="read,trade", help="comma-separated: read, trade, admin (default read,trade)"
    )
    token.add_argument("--admin", action="store_true", help="add the admin role and scope")

    admin = commands.add_parser(
        "admin",
        help="grant or revoke the admin role of an account",
        description="Give an account the admin role (or take it away). A grant applies from the user's next login "
        "or refresh; a revoke also signs every session of the account out (with Redis configured, at once; with "
        "the in-memory backend of another process, refresh stops at once and access tokens within their lifetime).",
    )
    admin.add_argument("action", choices=("grant", "revoke"), help="grant or revoke the admin role")
    admin.add_argument("email", help="the account's login email")

    imports = commands.add_parser(
        "import-bars",
        help="import OHLCV bars from a CSV file",
        description=importer.HELP_DESCRIPTION,
        epilog=importer.HELP_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imports.add_argument("file", type=Path, help="the CSV file")
    imports.add_argument("--symbol", required=True, help="an existing instrument, e.g. SIM-AAPL")
    imports.add_argument(
        "--timeframe", required=True, choices=[t.label for t in Timeframe], help="the timeframe of every row"
    )
    imports.add_argument(
        "--skip-invalid", action="store_true", help="write the good rows, report the bad ones (exit code 3)"
    )
    imports.add_argument(
        "--validate-only", action="store_true", help="check and count what an import would do, writing nothing"
    )

    backtest = commands.add_parser(
        "backtest",
        help="run a backtest on the running platform and summarise it",
        description="Run a strategy over stored bars through RunBacktest on a running signal service (make run), "
        "with a progress bar, a summary table and an equity-curve PNG (by default "
        "<BULLANT_DATA_DIR>/backtests/backtest-<id>.png; the path is printed). In BULLANT_ENV=local a development "
        "token is used unless --token or BULLANT_TOKEN is given.",
    )
    backtest_cli.add_arguments(backtest)

    commands.add_parser("version", help="print the version (also: bullant --version)")
    return parser


def _service_names(requested: Sequence[str], serve: argparse.ArgumentParser) -> list[str]:
    """The services to host; a bad name ends the command with `serve`'s own usage (exit code 2)."""
    if "all" in requested:
        if len(requested) > 1:
            serve.error("`all` cannot be combined with service names")
        return list(BUILT_SERVICES)
    unknown = [name for name in requested if name not in SERVICE_NAMES]
    if unknown:
        serve.error(
            f"unknown service {', '.join(unknown)}; the services are {', '.join(SERVICE_NAMES)} (or all, for every one)"
        )
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


async def _migrate(settings: Settings, check_only: bool) -> int:
    databases = Databases(DatabaseConfig.from_settings(settings))
    try:
        await databases.wait_until_reachable()
        if check_only:
            behind = await databases.behind_head()
            for name, current, head in behind:
                print(f"{name}: at {current or 'none (empty)'}, head is {head}")
            print(f"{len(behind)} database(s) behind: run bullant migrate" if behind else "all databases at head")
            return 1 if behind else 0
        for upgrade in await databases.migrate(create_databases=True):
            if upgrade.changed:
                print(f"{upgrade.name}: {upgrade.before or 'empty'} -> {upgrade.after}")
            else:
                print(f"{upgrade.name}: at {upgrade.after} (head), nothing to do")
        return 0
    finally:
        await databases.stop()


async def _set_admin(settings: Settings, email: str, *, grant: bool) -> int:
    databases = Databases(DatabaseConfig.from_settings(settings))
    coordination = Coordination(build_backend(settings.coordination.redis_url), keyspace_for(settings, "platform"))
    await databases.start()
    await coordination.start()
    try:
        account, revoked = await build_admin_roles(databases, coordination, settings).set_admin(email, grant=grant)
    finally:
        await coordination.stop()
        await databases.stop()
    if account is None:
        print(f"bullant: no account with email {email}", file=sys.stderr)
        return 1
    ended = f"; {revoked} session(s) signed out" if revoked else ""
    print(f"account {account.account_id} ({account.email}): roles {', '.join(account.roles)}{ended}")
    return 0


async def _import_bars(settings: Settings, args: argparse.Namespace) -> int:
    timeframe = next(t for t in Timeframe if t.label == args.timeframe)
    databases = Databases(DatabaseConfig.from_settings(settings))
    try:
        await databases.start()
        symbol = normalize_symbol(args.symbol)
        outcome = await build_bar_imports(databases).import_file(
            args.file,
            symbol=symbol,
            timeframe=timeframe,
            skip_invalid=args.skip_invalid,
            validate_only=args.validate_only,
            progress=ImportProgressBar(),
        )
    except DomainError as exc:
        print(f"bullant: {exc.message}", file=sys.stderr)
        for violation in getattr(exc, "violations", ())[:20]:
            print(f"  {violation.description}", file=sys.stderr)
        return importer.EXIT_FAILED
    except (OSError, ValueError, StartupError) as exc:
        print(f"bullant: {exc}", file=sys.stderr)
        return importer.EXIT_FAILED
    except DBAPIError as exc:
        print(f"bullant: the database failed: {describe_error(exc)}", file=sys.stderr)
        return importer.EXIT_FAILED
    finally:
        await databases.stop()
    for error in outcome.errors[:20]:
        print(f"line {error.line}: {error.reason} {error.field}: {error.message}", file=sys.stderr)
    if outcome.rejected > 20:
        print(f"... and {outcome.rejected - 20} more rejected rows", file=sys.stderr)
    print(importer.summary(symbol, timeframe, outcome, validate_only=args.validate_only))
    return importer.EXIT_ROWS_REJECTED if outcome.rejected else importer.EXIT_STORED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `bullant` command; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        print(version_text())
        return 0
    if args.command == "token":
        return _print_dev_token(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "gateway":
        return _gateway(args)
    if args.command == "backtest":
        return _backtest(args)
    settings = _settings({})
    if isinstance(settings, int):
        return settings
    if args.command == "import-bars":
        return asyncio.run(_import_bars(settings, args))
    if args.command == "admin":
        try:
            return asyncio.run(_set_admin(settings, args.email, grant=args.action == "grant"))
        except (StartupError, InvalidArgument) as exc:
            print(f"bullant: {exc}", file=sys.stderr)
            return 1
    configure_logging(settings.server.log_level, settings.server.log_format)
    try:
        return asyncio.run(_migrate(settings, args.check))
    except StartupError as exc:
        print(f"bullant: {exc}", file=sys.stderr)
        return exc.exit_code
    except DBAPIError as exc:
        print(f"bullant: migration failed: {describe_error(exc)}", file=sys.stderr)
        return 1


def _serve(args: argparse.Namespace) -> int:
    names = _service_names(args.services, args.command_parser)
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
    settings = _settings(overrides)
    if isinstance(settings, int):
        return settings
    configure_logging(settings.server.log_level, settings.server.log_format)
    if args.services == ["all"]:
        for name in SERVICE_NAMES:
            if name not in names:
                log.info("not serving %s: its contract exists, its implementation not yet", name)
    try:
        server = build_server(settings, names)
        gateway = GatewayServer(settings, beside=server) if args.gateway else None

        def announce(served: GrpcServer) -> None:
            _announce(served)
            if gateway is not None:
                print(f"bullant: gateway on http://{gateway.address}", file=sys.stderr, flush=True)

        asyncio.run(serve_until_signal(server, on_started=announce, beside=[gateway] if gateway else []))
    except StartupError as exc:
        print(f"bullant: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def _gateway(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {
        key: value
        for key, value in (
            ("gateway_host", args.host),
            ("gateway_port", args.port),
            ("default_upstream", args.default_upstream),
            ("upstreams", ",".join(args.upstream) if args.upstream else None),
        )
        if value is not None
    }
    settings = _settings(overrides)
    if isinstance(settings, int):
        return settings
    configure_logging(settings.server.log_level, settings.server.log_format)
    gateway = GatewayServer(settings)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        # A signal while starting (waiting for Redis, say) stops the start instead of waiting for it.
        starting = asyncio.create_task(gateway.start())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return
        starting.result()
        print(f"bullant: gateway on http://{gateway.address}", file=sys.stderr, flush=True)
        try:
            await stopping
        finally:
            await gateway.stop()

    try:
        asyncio.run(run())
    except StartupError as exc:
        print(f"bullant: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def _print_dev_token(args: argparse.Namespace) -> int:
    settings = _settings({})
    if isinstance(settings, int):
        return settings
    scopes = [scope.strip() for scope in args.scopes.split(",") if scope.strip()]
    token = _dev_token(settings, args.account_id, scopes, admin=args.admin)
    if isinstance(token, int):
        return token
    print(token)
    return 0


def _dev_token(settings: Settings, account_id: int, scopes: list[str], *, admin: bool) -> str | int:
    """A development access token, or an exit code after saying why there is none."""
    try:
        return asyncio.run(development_token(settings, account_id, scopes, admin=admin))
    except DevelopmentTokenRefused as exc:
        print(f"bullant: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"bullant: {exc}", file=sys.stderr)
        return 1


def _backtest(args: argparse.Namespace) -> int:
    settings = _settings({})
    if isinstance(settings, int):
        return settings
    token = args.token or os.environ.get("BULLANT_TOKEN") or _dev_token(settings, 1, ["read", "trade"], admin=False)
    if isinstance(token, int):
        return token
    return backtest_cli.run(
        args,
        target=args.target or f"127.0.0.1:{settings.server.port}",
        token=token,
        png_dir=settings.data_dir / "backtests",
    )


def _settings(overrides: dict[str, Any]) -> Settings | int:
    """Settings, or exit code 2 after printing what is wrong with them."""
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        print(f"bullant: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
