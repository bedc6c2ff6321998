"""Settings: defaults, environment parsing, per-environment files, clear errors for bad values, and the one field
each variable sets."""

from __future__ import annotations

from collections import Counter
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from services.core import settings as settings_module
from services.core.settings import (
    VARIABLES,
    Environment,
    LogFormat,
    Place,
    Section,
    ServerSettings,
    Settings,
    SettingsError,
    load_settings,
)

# The variables a deployment may set. Renaming a field renames its variable, so a change here is a change of the
# contract (and of the README's table), never a side effect of reorganising the sections.
CONTRACT = frozenset(
    {
        "BULLANT_ACCESS_TOKEN_TTL_SECONDS", "BULLANT_APP_NAME", "BULLANT_BACKTESTS_PER_ACCOUNT",
        "BULLANT_BACKTEST_WORKERS", "BULLANT_CCXT_BASE_URL", "BULLANT_CCXT_EXCHANGE",
        "BULLANT_CCXT_POLL_INTERVAL_SECONDS", "BULLANT_CCXT_SYMBOLS", "BULLANT_DATABASE_URL", "BULLANT_DATA_DIR",
        "BULLANT_DATA_KEY_FILE", "BULLANT_DB_AUTO_MIGRATE", "BULLANT_DB_CONNECT_TIMEOUT_SECONDS",
        "BULLANT_DB_HEALTH_INTERVAL_SECONDS", "BULLANT_DB_MAX_OVERFLOW", "BULLANT_DB_POOL_RECYCLE_SECONDS",
        "BULLANT_DB_POOL_SIZE", "BULLANT_DB_RETRY_ATTEMPTS", "BULLANT_DEFAULT_UPSTREAM", "BULLANT_ENV",
        "BULLANT_FEED_STALENESS_SECONDS", "BULLANT_GATEWAY_CORS_ORIGINS", "BULLANT_GATEWAY_HOST",
        "BULLANT_GATEWAY_MAX_BODY_BYTES", "BULLANT_GATEWAY_PORT", "BULLANT_GATEWAY_REQUESTS_PER_MINUTE",
        "BULLANT_GATEWAY_SHARED_TICKS", "BULLANT_GRACE_SECONDS", "BULLANT_HOST", "BULLANT_JWT_AUDIENCE",
        "BULLANT_JWT_ISSUER", "BULLANT_JWT_PRIVATE_KEY_FILE", "BULLANT_JWT_PUBLIC_KEY_FILE",
        "BULLANT_KEEPALIVE_TIMEOUT_SECONDS", "BULLANT_KEEPALIVE_TIME_SECONDS", "BULLANT_LOGIN_LOCKOUT_FAILURES",
        "BULLANT_LOGIN_LOCKOUT_SECONDS", "BULLANT_LOGIN_RATE_PER_EMAIL_PER_MINUTE",
        "BULLANT_LOGIN_RATE_PER_IP_PER_MINUTE", "BULLANT_LOG_FORMAT", "BULLANT_LOG_LEVEL", "BULLANT_MARKET_FEEDS",
        "BULLANT_MAX_ALERTS_PER_ACCOUNT", "BULLANT_MAX_CONCURRENT_STREAMS", "BULLANT_MAX_MESSAGE_BYTES",
        "BULLANT_MAX_QUEUED_TRAINING_JOBS", "BULLANT_MAX_STREAMS_PER_ACCOUNT", "BULLANT_METRICS_HOST",
        "BULLANT_METRICS_PORT", "BULLANT_MODEL_DEMO_SYMBOLS", "BULLANT_MODEL_DIR", "BULLANT_MODEL_DRIFT_FACTOR",
        "BULLANT_MODEL_GATE_MAX_PVALUE", "BULLANT_MODEL_GATE_THRESHOLD", "BULLANT_MODEL_RETRAIN_EVERY_HOURS",
        "BULLANT_MODEL_SCHEDULER_INTERVAL_SECONDS", "BULLANT_MODEL_SERVING_CACHE_SECONDS",
        "BULLANT_PAGE_TOKEN_KEY_FILE", "BULLANT_PASSWORD_HASH_MEMORY_KIB", "BULLANT_PASSWORD_HASH_PARALLELISM",
        "BULLANT_PASSWORD_HASH_TIME_COST", "BULLANT_PORT", "BULLANT_PUBLIC_URL", "BULLANT_REDIS_URL",
        "BULLANT_REFRESH_TOKEN_TTL_SECONDS", "BULLANT_REPLAY_SPEED", "BULLANT_REPLAY_SYMBOLS", "BULLANT_REPLICA_ID",
        "BULLANT_REQUEST_TIMEOUT_SECONDS", "BULLANT_RETRY_INITIAL_BACKOFF_SECONDS", "BULLANT_RETRY_MAX_ATTEMPTS",
        "BULLANT_RETRY_MAX_BACKOFF_SECONDS", "BULLANT_SHARD_COUNT", "BULLANT_SHARD_URLS",
        "BULLANT_SIGNAL_BAR_CLOSE_GRACE_SECONDS", "BULLANT_SIGNAL_ENGINE_LEASE_SECONDS",
        "BULLANT_SIGNAL_FUSION_DEADLINE_SECONDS", "BULLANT_SIGNAL_FUSION_ENABLED", "BULLANT_SIGNAL_FUSION_HORIZON_BARS",
        "BULLANT_SIGNAL_HEARTBEAT_SECONDS", "BULLANT_SIGNAL_PERFORMANCE_INTERVAL_SECONDS", "BULLANT_SIGNAL_REPEAT_BARS",
        "BULLANT_SIGNAL_STRATEGIES", "BULLANT_SIGNAL_SYMBOLS", "BULLANT_SIGNAL_TIMEFRAMES",
        "BULLANT_SIGNAL_WATCH_REFRESH_SECONDS", "BULLANT_SIM_HISTORY_DAILY_DAYS", "BULLANT_SIM_HISTORY_MINUTE_DAYS",
        "BULLANT_SIM_SEED", "BULLANT_SIM_TICK_INTERVAL_SECONDS", "BULLANT_STARTUP_WAIT_SECONDS",
        "BULLANT_STREAM_QUEUE_CAPACITY", "BULLANT_TRAINING_WORKERS", "BULLANT_TRUSTED_PROXIES", "BULLANT_UPSTREAMS",
    }
)  # fmt: skip


def test_defaults_without_environment() -> None:
    settings = load_settings(environ={})
    assert settings.env is Environment.LOCAL
    assert settings.server.port == 50051
    assert settings.server.metrics_port == 9464
    assert _upstream(settings, "market") == "127.0.0.1:50051"


def _upstream(settings: Settings, service: str) -> str:
    # As the client factory asks before its server has bound a port: at the configured one.
    return settings.calls.upstream(service, port=settings.server.port)


def test_the_default_upstream_is_this_server_unless_configured() -> None:
    assert _upstream(load_settings(environ={"BULLANT_PORT": "50611"}), "market") == "127.0.0.1:50611"
    configured = load_settings(environ={"BULLANT_PORT": "50611", "BULLANT_DEFAULT_UPSTREAM": "gateway:9000"})
    assert _upstream(configured, "market") == "gateway:9000"
    # With an ephemeral port (0) the address is known only once bound; the client factory passes the bound port.
    assert _upstream(load_settings(environ={"BULLANT_PORT": "0"}), "market") == "127.0.0.1:50051"
    assert load_settings(environ={"BULLANT_PORT": "0"}).calls.upstream("market", port=43210) == "127.0.0.1:43210"
    assert configured.calls.upstream("market", port=43210) == "gateway:9000"


def test_environment_variables_are_parsed_and_typed() -> None:
    settings = load_settings(
        environ={
            "BULLANT_PORT": "6000",
            "BULLANT_GRACE_SECONDS": "2.5",
            "BULLANT_LOG_LEVEL": "debug",
            "BULLANT_LOG_FORMAT": "text",
            "BULLANT_UPSTREAMS": "market=10.0.0.5:50051, signal = sig:7000",
            "BULLANT_SOMETHING_NEWER": "ignored",
            "UNRELATED": "x",
        }
    )
    assert settings.server.port == 6000
    assert settings.server.grace_seconds == 2.5
    assert settings.server.log_level == "DEBUG"
    assert settings.server.log_format is LogFormat.TEXT
    assert _upstream(settings, "market") == "10.0.0.5:50051"
    assert _upstream(settings, "signal") == "sig:7000"
    assert _upstream(settings, "model") == "127.0.0.1:6000"  # this server (BULLANT_PORT), no default configured


def test_overrides_win_over_environment() -> None:
    settings = load_settings(environ={"BULLANT_PORT": "6000"}, port=7000, backtest_workers=3)
    assert settings.server.port == 7000
    assert settings.signal.backtest_workers == 3


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("BULLANT_PORT", "abc", "BULLANT_PORT='abc'"),
        ("BULLANT_PORT", "70000", "less than or equal to 65535"),
        ("BULLANT_GRACE_SECONDS", "-1", "BULLANT_GRACE_SECONDS='-1'"),
        ("BULLANT_LOG_LEVEL", "loud", "BULLANT_LOG_LEVEL='loud'"),
        ("BULLANT_LOG_FORMAT", "xml", "BULLANT_LOG_FORMAT='xml'"),
        ("BULLANT_UPSTREAMS", "market", "expected service=host:port"),
        ("BULLANT_UPSTREAMS", "trading=x:1", "unknown service(s) trading"),
        ("BULLANT_ENV", "staging", "BULLANT_ENV='staging': must be one of local, dev, prod"),
        ("BULLANT_UPSTREAMS", "market=10.0.0.5", "expected host:port"),
        ("BULLANT_DEFAULT_UPSTREAM", "gateway:http", "expected host:port"),
        (
            "BULLANT_DATABASE_URL",
            "mysql+asyncmy://root@127.0.0.1:notaport/x",
            "BULLANT_DATABASE_URL='mysql+asyncmy://root@127.0.0.1:notaport/x': the port must be a number",
        ),
        ("BULLANT_DATABASE_URL", "mysql+asyncmy://root@db:3306", "name the database after the host"),
        ("BULLANT_DATABASE_URL", "mysql+asyncmy://root@db:3306/a;b", "database name 'a;b'"),
        ("BULLANT_DATABASE_URL", "postgresql://db/x", "unsupported URL scheme 'postgresql'"),
        ("BULLANT_SHARD_URLS", "sqlite+aiosqlite:///a.db,mysql+asyncmy://db:x/s", "shard 1 (mysql+asyncmy://db:x/s)"),
        ("BULLANT_REDIS_URL", "redis://127.0.0.1:notaport/0", "BULLANT_REDIS_URL='redis://127.0.0.1:notaport/0'"),
        ("BULLANT_REDIS_URL", "redis://127.0.0.1:6379/zero", "the database after the host must be a number"),
        ("BULLANT_STARTUP_WAIT_SECONDS", "-1", "BULLANT_STARTUP_WAIT_SECONDS='-1'"),
    ],
)
def test_bad_value_names_the_variable(variable: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={variable: value})
    assert expected in str(caught.value)
    assert str(caught.value).startswith("invalid configuration:")


def test_a_bad_url_is_shown_without_its_password() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(
            environ={
                "BULLANT_DATABASE_URL": "mysql+asyncmy://bullant:s3cret@db:port/x",
                "BULLANT_REDIS_URL": "redis://:hunter2@cache:port/0",
            }
        )
    message = str(caught.value)
    assert "BULLANT_DATABASE_URL='mysql+asyncmy://bullant:***@db:port/x'" in message
    assert "BULLANT_REDIS_URL='redis://:***@cache:port/0'" in message
    assert "s3cret" not in message
    assert "hunter2" not in message


def test_good_urls_and_addresses_pass() -> None:
    settings = load_settings(
        environ={
            "BULLANT_DATABASE_URL": "mysql+asyncmy://bullant:p%40ss@db.internal:3306/bullant_global?charset=utf8mb4",
            "BULLANT_SHARD_URLS": "sqlite+aiosqlite:///var/s0.db,mysql+asyncmy://db1/bullant_shard_1",
            "BULLANT_REDIS_URL": "rediss://:token@cache:6380/2",
            "BULLANT_UPSTREAMS": "market=10.0.0.5:50051,signal=[::1]:7000",
            "BULLANT_DEFAULT_UPSTREAM": "bullant-platform:50051",
        }
    )
    assert _upstream(settings, "signal") == "[::1]:7000"
    unix = load_settings(environ={"BULLANT_REDIS_URL": "unix:///run/redis.sock"})
    assert unix.coordination.redis_url == "unix:///run/redis.sock"


def test_every_bad_variable_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={"BULLANT_PORT": "x", "BULLANT_METRICS_PORT": "y"})
    assert len(caught.value.problems) == 2


def test_cross_field_rule() -> None:
    with pytest.raises(SettingsError, match="retry_max_backoff_seconds must be >="):
        load_settings(environ={"BULLANT_RETRY_INITIAL_BACKOFF_SECONDS": "5", "BULLANT_RETRY_MAX_BACKOFF_SECONDS": "1"})


def test_environment_file_is_read_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dev.env").write_text(
        "# comment\nBULLANT_PORT=6100\nBULLANT_LOG_FORMAT='json'\n\nBULLANT_GRACE_SECONDS=3\n"
    )
    monkeypatch.setattr(settings_module, "CONFIG_DIR", tmp_path)
    settings = load_settings(environ={"BULLANT_ENV": "dev", "BULLANT_GRACE_SECONDS": "4"})
    assert settings.env is Environment.DEV
    assert settings.server.port == 6100
    assert settings.server.log_format is LogFormat.JSON
    assert settings.server.grace_seconds == 4


def test_malformed_environment_file_is_reported_with_its_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "prod.env").write_text("BULLANT_PORT=1\nnot a setting\n")
    monkeypatch.setattr(settings_module, "CONFIG_DIR", tmp_path)
    with pytest.raises(SettingsError, match=r"prod.env:2: expected NAME=value"):
        load_settings(environ={"BULLANT_ENV": "prod"})


def test_shipped_environment_files_are_valid() -> None:
    for env in Environment:
        settings = load_settings(environ={"BULLANT_ENV": env.value})
        assert settings.env is env
    assert load_settings(environ={"BULLANT_ENV": "prod"}).server.host == "0.0.0.0"


def test_settings_are_frozen() -> None:
    settings = load_settings(environ={})
    with pytest.raises(ValueError, match="frozen"):
        settings.server.port = 1
    with pytest.raises(ValueError, match="frozen"):
        settings.server = ServerSettings()


def test_every_variable_names_exactly_one_field() -> None:
    # Counted from the models themselves, not from VARIABLES: a field name two sections declared would be one variable
    # setting two fields.
    claims: Counter[str] = Counter()
    for name, info in Settings.model_fields.items():
        section = info.annotation
        fields = list(section.model_fields) if isinstance(section, type) and issubclass(section, Section) else [name]
        claims.update(f"BULLANT_{field.upper()}" for field in fields)
    assert [variable for variable, count in claims.items() if count > 1] == []
    assert set(VARIABLES) == set(claims) == CONTRACT


def test_a_field_name_two_sections_declare_is_refused() -> None:
    class Other(Section):
        port: int = 1

    class Clashing(Settings):
        other: Other = Other()

    with pytest.raises(TypeError, match="BULLANT_PORT is claimed by two fields"):
        settings_module._variables(Clashing)


def _as_variable(value: Any) -> str:
    """A field's default as the text of its variable."""
    if isinstance(value, bool) or value is None:
        return "true"  # None: the optional paths (any path will do) and db_auto_migrate (a bool)
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, dict):
        return ",".join(f"{key}={item}" for key, item in value.items())
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


def _set_alone(settings: Settings, place: Place) -> bool:
    """Whether the field at `place` is set and no other is (but the environment, which load_settings always sets)."""
    owner = settings if place.section is None else getattr(settings, place.section)
    others = {p.section for p in VARIABLES.values() if p.section not in (None, place.section)}
    if any(getattr(settings, str(section)).model_fields_set for section in others):
        return False
    return place.field in owner.model_fields_set and owner.model_fields_set <= {place.field, "env"}


@pytest.mark.parametrize("variable", sorted(VARIABLES))
def test_each_variable_sets_its_field_and_no_other(
    variable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings_module, "CONFIG_DIR", tmp_path)  # no config/<env>.env
    place = VARIABLES[variable]
    defaults = Settings()
    default = getattr(defaults if place.section is None else getattr(defaults, place.section), place.field)
    settings = load_settings(environ={variable: _as_variable(default)})
    assert _set_alone(settings, place)
    # The same by its lower-case name, as an override of load_settings and of with_overrides.
    assert _set_alone(load_settings(environ={}, **{place.field: default}), place)
    assert _set_alone(defaults.with_overrides(**{place.field: default}), place)


def test_with_overrides_checks_the_values_and_keeps_what_was_set() -> None:
    settings = load_settings(environ={"BULLANT_PORT": "6000", "BULLANT_DEFAULT_UPSTREAM": "gateway:9000"})
    changed = settings.with_overrides(password_hash_time_cost=2, upstreams={"market": "m:1"})
    assert changed.account.password_hash_time_cost == 2
    assert changed.server.port == 6000
    assert _upstream(changed, "market") == "m:1"
    assert _upstream(changed, "signal") == "gateway:9000"
    assert settings.account.password_hash_time_cost == 3  # frozen: a new object
    with pytest.raises(SettingsError, match="BULLANT_GATEWAY_PORT=70000"):
        settings.with_overrides(gateway_port=70000)
    with pytest.raises(TypeError, match="unknown setting"):
        settings.with_overrides(gateway_prot=1)
