"""Settings: defaults, environment parsing, per-environment files, and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core import settings as settings_module
from services.core.settings import Environment, LogFormat, SettingsError, load_settings


def test_defaults_without_environment() -> None:
    settings = load_settings(environ={})
    assert settings.env is Environment.LOCAL
    assert settings.port == 50051
    assert settings.metrics_port == 9464
    assert settings.upstream("market") == "127.0.0.1:50051"


def test_the_default_upstream_is_this_server_unless_configured() -> None:
    assert load_settings(environ={"BULLANT_PORT": "50611"}).upstream("market") == "127.0.0.1:50611"
    configured = load_settings(environ={"BULLANT_PORT": "50611", "BULLANT_DEFAULT_UPSTREAM": "gateway:9000"})
    assert configured.upstream("market") == "gateway:9000"
    # With an ephemeral port (0) the address is known only once bound; the client factory passes the bound port.
    assert load_settings(environ={"BULLANT_PORT": "0"}).upstream("market") == "127.0.0.1:50051"
    assert load_settings(environ={"BULLANT_PORT": "0"}).upstream("market", own_port=43210) == "127.0.0.1:43210"
    assert configured.upstream("market", own_port=43210) == "gateway:9000"


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
    assert settings.port == 6000
    assert settings.grace_seconds == 2.5
    assert settings.log_level == "DEBUG"
    assert settings.log_format is LogFormat.TEXT
    assert settings.upstream("market") == "10.0.0.5:50051"
    assert settings.upstream("signal") == "sig:7000"
    assert settings.upstream("model") == "127.0.0.1:6000"  # this server (BULLANT_PORT), no default configured


def test_overrides_win_over_environment() -> None:
    settings = load_settings(environ={"BULLANT_PORT": "6000"}, port=7000)
    assert settings.port == 7000


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
    assert settings.upstream("signal") == "[::1]:7000"
    assert load_settings(environ={"BULLANT_REDIS_URL": "unix:///run/redis.sock"}).redis_url == "unix:///run/redis.sock"


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
    assert settings.port == 6100
    assert settings.log_format is LogFormat.JSON
    assert settings.grace_seconds == 4


def test_malformed_environment_file_is_reported_with_its_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "prod.env").write_text("BULLANT_PORT=1\nnot a setting\n")
    monkeypatch.setattr(settings_module, "CONFIG_DIR", tmp_path)
    with pytest.raises(SettingsError, match=r"prod.env:2: expected NAME=value"):
        load_settings(environ={"BULLANT_ENV": "prod"})


def test_shipped_environment_files_are_valid() -> None:
    for env in Environment:
        settings = load_settings(environ={"BULLANT_ENV": env.value})
        assert settings.env is env
    assert load_settings(environ={"BULLANT_ENV": "prod"}).host == "0.0.0.0"


def test_settings_are_frozen() -> None:
    settings = load_settings(environ={})
    with pytest.raises(ValueError, match="frozen"):
        settings.port = 1
