"""Settings: defaults, environment parsing, per-environment files, and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core import settings as settings_module
from services.core.settings import (
    Environment,
    LogFormat,
    ServerSettings,
    Settings,
    SettingsError,
    load_settings,
)


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
