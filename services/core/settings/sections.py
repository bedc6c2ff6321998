"""The settings' sections: one frozen, typed group of fields per part of the platform. A field `x` of any section is
read from the variable BULLANT_X (services/core/settings/__init__.py reads them and composes the sections)."""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from services.core.timeframes import Timeframe
from services.core.urls import check_address, check_database_url, check_redis_url, redact_url

# Every service with a contract (protos/bullant/<name>/v1), and those of them that are built. A service with a
# contract only is not served at all: `serve all` leaves it out, `serve <it>` is refused, and health, reflection and
# the gateway's /readyz never count it, so SERVING always means a service can do its job. Building one is adding
# it to BUILT_SERVICES.
SERVICE_NAMES: tuple[str, ...] = ("account", "market", "signal", "model", "chat")
BUILT_SERVICES: tuple[str, ...] = ("account", "market", "signal", "model")


def _sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def _comma_list(value: Any) -> Any:
    """Splits "a, b,,c" into ["a", "b", "c"]; anything but a string is left to the field's type."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _empty_path_is_unset(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


# A list read from one comma-separated variable; a path where an empty variable means unset.
CommaList = Annotated[list[str], BeforeValidator(_comma_list)]
OptionalPath = Annotated[Path | None, BeforeValidator(_empty_path_is_unset)]


class Environment(StrEnum):
    """Where a process runs; selects config/<env>.env and production safety checks."""

    LOCAL = "local"
    DEV = "dev"
    PROD = "prod"


class LogFormat(StrEnum):
    """How log records are written: one JSON object per line, or plain text for a terminal."""

    JSON = "json"
    TEXT = "text"


class Section(BaseModel):
    """A group of settings. Frozen; each field `x` is read from the variable BULLANT_X."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ServerSettings(Section):
    """This process's gRPC server: where it listens, its limits, start-up and shutdown, its identity and its logs."""

    host: str = "127.0.0.1"
    port: int = Field(default=50051, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    # -1 disables the /metrics endpoint; 0 picks a free port (as does port=0).
    metrics_port: int = Field(default=9464, ge=-1, le=65535)
    grace_seconds: float = Field(default=10.0, gt=0, le=300)
    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    keepalive_time_seconds: int = Field(default=30, ge=1)
    keepalive_timeout_seconds: int = Field(default=10, ge=1)
    max_concurrent_streams: int = Field(default=1000, ge=1)
    # Server streams one account may keep open on this server, per streaming service (StreamTicks, StreamSignals).
    max_streams_per_account: int = Field(default=32, ge=1, le=10_000)
    # How long start-up waits for a database or Redis that does not answer yet, with a log line per attempt, before
    # giving up with exit code 69 (0: give up at the first failure).
    startup_wait_seconds: float = Field(default=30.0, ge=0, le=3600)
    # This replica's identity across restarts (services/core/replica.py; empty: "<host name>:<port>"): on start-up
    # it fails at once the training jobs and backtests its previous run left running.
    replica_id: str = Field(default="", max_length=64)
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    log_format: LogFormat = LogFormat.JSON

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class CallSettings(Section):
    """Calls to other services: deadlines, retries, and where each service is reached."""

    request_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    retry_max_attempts: int = Field(default=4, ge=1, le=5)
    retry_initial_backoff_seconds: float = Field(default=0.1, gt=0)
    retry_max_backoff_seconds: float = Field(default=2.0, gt=0)
    # Upstream address per service name ("market=10.0.0.5:50051,signal=..."); unset ones use `default_upstream`,
    # which defaults to this process's own port on loopback (the all-in-one server calls itself).
    upstreams: dict[str, str] = Field(default_factory=dict)
    default_upstream: str = "127.0.0.1:50051"

    @field_validator("upstreams", mode="before")
    @classmethod
    def _parse_upstreams(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        parsed: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            name, sep, address = item.partition("=")
            if not sep or not name.strip() or not address.strip():
                raise ValueError(f"expected service=host:port, got {item!r}")
            parsed[name.strip()] = address.strip()
        return parsed

    @field_validator("upstreams")
    @classmethod
    def _known_upstreams(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(SERVICE_NAMES))
        if unknown:
            raise ValueError(f"unknown service(s) {', '.join(unknown)}; known: {', '.join(SERVICE_NAMES)}")
        for address in value.values():
            check_address(address)
        return value

    @field_validator("default_upstream")
    @classmethod
    def _upstream_address(cls, value: str) -> str:
        check_address(value)
        return value

    @model_validator(mode="after")
    def _backoff_order(self) -> CallSettings:
        if self.retry_max_backoff_seconds < self.retry_initial_backoff_seconds:
            raise ValueError("retry_max_backoff_seconds must be >= retry_initial_backoff_seconds")
        return self

    def upstream(self, service: str, *, port: int) -> str:
        """The host:port where `service` is reached. Without an upstream of its own or a default_upstream, that is
        this process's own server at `port`: the port it bound, else the configured one (port 0 picks one at
        start; before that the default_upstream stands in)."""
        if service in self.upstreams:
            return self.upstreams[service]
        if "default_upstream" not in self.model_fields_set and port:
            return f"127.0.0.1:{port}"
        return self.default_upstream


class DatabaseSettings(Section):
    """The global database and the account shards. Empty URLs mean the embedded default: SQLite files under the
    data directory."""

    database_url: str = ""
    # Shard databases in shard order ("url0,url1,..."); empty means `shard_count` SQLite files under data_dir.
    shard_urls: CommaList = Field(default_factory=list)
    shard_count: int = Field(default=2, ge=1, le=256)
    db_pool_size: int = Field(default=10, ge=1, le=500)
    db_max_overflow: int = Field(default=20, ge=0, le=500)
    db_pool_recycle_seconds: int = Field(default=1800, ge=30)
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    db_retry_attempts: int = Field(default=4, ge=1, le=10)
    db_health_interval_seconds: float = Field(default=5.0, gt=0, le=300)
    # Upgrade databases at start-up; unset means yes for the embedded local default, no elsewhere (run
    # `bullant migrate`, e.g. as a Kubernetes Job, and services refuse to start on a database behind head).
    db_auto_migrate: bool | None = None

    @field_validator("database_url", "shard_urls")
    @classmethod
    def _database_url(cls, value: Any) -> Any:
        if not isinstance(value, list):
            if value:
                check_database_url(value)
            return value
        for index, url in enumerate(value):
            try:
                check_database_url(url)
            except ValueError as error:
                raise ValueError(f"shard {index} ({redact_url(url)}): {error}") from None
        return value

    def auto_migrate(self, env: Environment) -> bool:
        """Whether databases are upgraded at start-up in `env` (see db_auto_migrate)."""
        if self.db_auto_migrate is not None:
            return self.db_auto_migrate
        return env is Environment.LOCAL and not self.database_url

    def global_database_url(self, data_dir: Path) -> str:
        """URL of the global database (embedded: under `data_dir`)."""
        return self.database_url or _sqlite_url(data_dir / "global.db")

    def shard_database_urls(self, data_dir: Path) -> list[str]:
        """URLs of the shard databases, in shard order (embedded: under `data_dir`)."""
        if self.shard_urls:
            return list(self.shard_urls)
        return [_sqlite_url(data_dir / f"shard_{index}.db") for index in range(self.shard_count)]


class CoordinationSettings(Section):
    """The coordination backend (cache, pub-sub, locks, rate limits)."""

    # Empty means the in-memory backend (one process); a redis:// URL shares cache, pub-sub and locks across replicas.
    redis_url: str = ""

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if value.strip():
            check_redis_url(value.strip())
        return value


class AuthSettings(Section):
    """The platform's keys and its access tokens: what every process needs to verify (or issue) credentials, sign
    page tokens and seal the secrets it reads back."""

    # Access tokens: Ed25519 PEM files. Unset in the local environment means a development key under data_dir/keys.
    jwt_private_key_file: OptionalPath = None
    jwt_public_key_file: OptionalPath = None
    # 32 random bytes (base64) that encrypt secrets kept for reading back (TOTP secrets); generated in local.
    data_key_file: OptionalPath = None
    # 32 random bytes (base64) that sign page tokens, the same on every replica of every service; generated in local.
    page_token_key_file: OptionalPath = None
    jwt_issuer: str = Field(default="bullant", min_length=1)
    jwt_audience: str = Field(default="bullant", min_length=1)
    access_token_ttl_seconds: int = Field(default=900, ge=60, le=86400)


class AccountSettings(Section):
    """The account service: sessions, password hashing, login throttling, and the links its emails carry."""

    # Refresh tokens (opaque, rotated on every use): how long one stays valid unless used.
    refresh_token_ttl_seconds: int = Field(default=30 * 86400, ge=3600, le=365 * 86400)
    # argon2id cost of password hashes; raising them rehashes each password at its next login.
    password_hash_time_cost: int = Field(default=3, ge=1, le=20)
    password_hash_memory_kib: int = Field(default=64 * 1024, ge=64, le=4 * 1024 * 1024)
    password_hash_parallelism: int = Field(default=4, ge=1, le=16)
    # Login throttling: attempts per minute per email and per client IP, then a lockout of the email after this
    # many failures in a row.
    login_rate_per_email_per_minute: int = Field(default=10, ge=1, le=10_000)
    login_rate_per_ip_per_minute: int = Field(default=60, ge=1, le=100_000)
    login_lockout_failures: int = Field(default=10, ge=1, le=1000)
    login_lockout_seconds: int = Field(default=900, ge=1, le=86400)
    # Peers whose x-forwarded-for is believed (the gateway); the client IP of other calls is the peer address.
    trusted_proxies: CommaList = Field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])
    # Base URL of the web app, for links in emails (email verification, password reset).
    public_url: str = Field(default="http://localhost:8080", pattern=r"^https?://[^\s]+$")

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value


class MarketSettings(Section):
    """The market service: its feeds (sim, replay, ccxt) and its tick streams."""

    # Market data feeds to run: any of sim, replay, ccxt (each on the one replica holding its leader lock).
    market_feeds: CommaList = Field(default_factory=lambda: ["sim"])
    sim_seed: int = 42
    sim_tick_interval_seconds: float = Field(default=0.25, gt=0, le=60)
    # History the simulator stores at its first start: days of daily bars, days of minute bars (and roll-ups).
    sim_history_daily_days: int = Field(default=365, ge=0, le=3650)
    sim_history_minute_days: int = Field(default=3, ge=0, le=30)
    # Stored symbols the replay feed plays back as "<symbol>.REPLAY", at this many market seconds per second.
    replay_symbols: CommaList = Field(default_factory=list)
    replay_speed: float = Field(default=60.0, gt=0, le=1_000_000)
    # The ccxt feed: exchange id, unified symbols ("BTC/USDT"), and (tests only) a base URL replacing the exchange's.
    ccxt_exchange: str = "binance"
    ccxt_symbols: CommaList = Field(default_factory=lambda: ["BTC/USDT"])
    ccxt_base_url: str = ""
    ccxt_poll_interval_seconds: float = Field(default=2.0, gt=0, le=300)
    # A live symbol without a tick for this long makes its feed degraded (every symbol: reconnect).
    feed_staleness_seconds: float = Field(default=30.0, gt=0, le=3600)
    # Ticks a StreamTicks subscriber may have queued before conflation (open streams per account: the server's).
    stream_queue_capacity: int = Field(default=4096, ge=16, le=1_000_000)

    @field_validator("market_feeds")
    @classmethod
    def _known_feeds(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - {"sim", "replay", "ccxt"})
        if unknown:
            raise ValueError(f"unknown feed(s) {', '.join(unknown)}; known: sim, replay, ccxt")
        return value


class SignalSettings(Section):
    """The signal service: backtests, alert rules, and the live signal engine with its model fusion."""

    # Backtests a signal replica simulates at once (others wait QUEUED), and queued or running ones per account.
    backtest_workers: int = Field(default=2, ge=1, le=256)
    backtests_per_account: int = Field(default=3, ge=1, le=1000)
    # Alert rules one account may keep.
    max_alerts_per_account: int = Field(default=100, ge=1, le=100_000)
    # The live signal engine (leader): symbols always watched besides those of alerts and StreamSignals callers,
    # the timeframes ("1m", "5m", "15m", "1h", "1d") and strategies (empty: all) of the platform's signals.
    signal_symbols: CommaList = Field(default_factory=list)
    signal_timeframes: CommaList = Field(default_factory=lambda: ["1m"])
    signal_strategies: CommaList = Field(default_factory=list)
    # A strategy repeating its side on a series within this many bars is not signalled again (0: every time).
    signal_repeat_bars: int = Field(default=3, ge=0, le=10_000)
    # Model fusion: on/off, the deadline of the model call, and the forecast horizon (bars) asked for.
    signal_fusion_enabled: bool = True
    signal_fusion_deadline_seconds: float = Field(default=0.5, gt=0, le=30.0)
    signal_fusion_horizon_bars: int = Field(default=1, ge=1, le=100)
    # A quiet symbol's bar is closed this long after its period ended and its last tick came.
    signal_bar_close_grace_seconds: float = Field(default=2.0, ge=0.0, le=300.0)
    # StreamSignals keep-alive when quiet; the engine's lease; how often it re-reads the watch list and runs the
    # signal-performance job.
    signal_heartbeat_seconds: float = Field(default=15.0, gt=0, le=300.0)
    signal_engine_lease_seconds: float = Field(default=10.0, ge=1.0, le=300.0)
    signal_watch_refresh_seconds: float = Field(default=10.0, gt=0, le=3600.0)
    signal_performance_interval_seconds: float = Field(default=60.0, gt=0, le=86_400.0)

    @field_validator("signal_timeframes")
    @classmethod
    def _known_timeframes(cls, value: list[str]) -> list[str]:
        known = [timeframe.label for timeframe in Timeframe]
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"unknown timeframe(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return value

    def timeframes(self) -> tuple[Timeframe, ...]:
        """The platform's live-signal timeframes (signal_timeframes), in their configured order."""
        return tuple(Timeframe.from_label(label) for label in self.signal_timeframes)


class ModelSettings(Section):
    """The model service: artifacts, training, the promotion gate, drift, serving and the scheduler."""

    # Model artifacts (empty: <data_dir>/models), training worker processes per model replica, and the most
    # training jobs queued or running at once.
    model_dir: str = ""
    training_workers: int = Field(default=1, ge=1, le=64)
    max_queued_training_jobs: int = Field(default=10, ge=1, le=10_000)
    # The promotion gate: held-out MASE strictly below the threshold (a margin over naive) and a one-sided
    # Diebold-Mariano test against naive below the p-value. On random walks a near-naive model lands just under
    # MASE 1.0 about a third of the time, so "below 1.0" alone is no gate.
    model_gate_threshold: float = Field(default=0.99, gt=0, le=1.0)
    model_gate_max_pvalue: float = Field(default=0.05, gt=0, le=1.0)
    # Drift: live MAE over a full window above this factor times the evaluation MAE (a retrain is scheduled).
    model_drift_factor: float = Field(default=1.5, gt=1.0, le=100.0)
    # Predict's in-process caches: the latest bars and each series' versions are re-read after this many seconds.
    model_serving_cache_seconds: float = Field(default=5.0, ge=0.0, le=3600.0)
    # The model scheduler (leader): how often it checks drift and due retraining, how old a version marked
    # auto-retrain gets before it is retrained, and the symbols whose demo models it trains for the live engine's
    # timeframes (`make run`; promoted only through the gate).
    model_scheduler_interval_seconds: float = Field(default=300.0, gt=0, le=86_400.0)
    model_retrain_every_hours: float = Field(default=168.0, gt=0, le=8760.0)
    model_demo_symbols: CommaList = Field(default_factory=list)

    def artifact_dir(self, data_dir: Path) -> Path:
        """Where artifacts are written: model_dir, else `models` under `data_dir`."""
        return Path(self.model_dir) if self.model_dir else data_dir / "models"


class GatewaySettings(Section):
    """The HTTP gateway: where it listens, the browser origins allowed (CORS), its request limits, shared ticks."""

    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8080, ge=0, le=65535)
    gateway_cors_origins: CommaList = Field(default_factory=list)
    # The largest request body.
    gateway_max_body_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    # REST requests one client (credential, else address) may make per minute, across gateway replicas (0: no limit).
    gateway_requests_per_minute: int = Field(default=600, ge=0, le=1_000_000)
    # WebSocket ticks: one upstream stream per symbol shared by all sockets (gateway/relay.py), where the gateway holds
    # the platform signing key to act as a service; off, or without the key, each socket topic streams on its own.
    gateway_shared_ticks: bool = True
