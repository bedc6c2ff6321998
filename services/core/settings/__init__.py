"""Typed settings for every Bullant process, read from BULLANT_* variables and a per-environment file.

`Settings` holds what the whole process shares (`env`, `app_name`, `data_dir`) and one typed section per part of the
platform: `server`, `calls`, `database`, `coordination`, `auth`, `account`, `market`, `signal`, `model`, `gateway`.
A part is given its section whole (`settings.signal`), not fields copied one by one.

One rule names every variable: a field `x` is read from BULLANT_X, whichever section declares it (so
`settings.signal.backtest_workers` is BULLANT_BACKTEST_WORKERS and `settings.gateway.gateway_port` is
BULLANT_GATEWAY_PORT); the section groups a field, it never renames it. The sections are in `sections.py`;
`VARIABLES`, derived from the models, maps each variable to its (section, field), and a field name claimed by two
sections stops the import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.core.settings.sections import (
    BUILT_SERVICES,
    SERVICE_NAMES,
    AccountSettings,
    AuthSettings,
    CallSettings,
    CoordinationSettings,
    DatabaseSettings,
    Environment,
    GatewaySettings,
    LogFormat,
    MarketSettings,
    ModelSettings,
    Section,
    ServerSettings,
    SignalSettings,
)
from services.core.urls import redact_url

__all__ = [
    "BUILT_SERVICES",
    "CONFIG_DIR",
    "SERVICE_NAMES",
    "VARIABLES",
    "AccountSettings",
    "AuthSettings",
    "CallSettings",
    "CoordinationSettings",
    "DatabaseSettings",
    "Environment",
    "GatewaySettings",
    "LogFormat",
    "MarketSettings",
    "ModelSettings",
    "Place",
    "Section",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "SignalSettings",
    "load_settings",
]

CONFIG_DIR = Path(__file__).resolve().parents[3] / "config"


class SettingsError(Exception):
    """Configuration is invalid; the message names every bad variable and why."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class Settings(BaseModel):
    """Every setting a Bullant process reads. Frozen: build a new one (`with_overrides`) instead of mutating.

    The process-wide fields, then one section per part; `load_settings` does the reading.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    env: Environment = Environment.LOCAL
    app_name: str = Field(default="bullant", pattern=r"^[a-z][a-z0-9-]{0,30}$")
    # Where embedded databases, generated keys and (by default) model artifacts live.
    data_dir: Path = Path("var")

    server: ServerSettings = Field(default_factory=ServerSettings)
    calls: CallSettings = Field(default_factory=CallSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    coordination: CoordinationSettings = Field(default_factory=CoordinationSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    account: AccountSettings = Field(default_factory=AccountSettings)
    market: MarketSettings = Field(default_factory=MarketSettings)
    signal: SignalSettings = Field(default_factory=SignalSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)

    def with_overrides(self, **overrides: Any) -> Settings:
        """These settings with `overrides` applied, named as `load_settings` takes them (`port=0`,
        `default_upstream="host:1"`) and checked again (SettingsError); what was set before stays set."""
        unknown = sorted(set(overrides) - set(_PLACES))
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(unknown)}")
        nested = self.model_dump(exclude_unset=True)
        for name, value in _nest(overrides).items():
            nested[name] = {**nested.get(name, {}), **value} if name in _SECTIONS else value
        return _validate(nested, overrides)


class Place(NamedTuple):
    """Where a variable's value lives: `settings.<section>.<field>`, or `settings.<field>` when section is None."""

    section: str | None
    field: str


def _section_type(annotation: Any) -> type[Section] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, Section) else None


def _variables(model: type[BaseModel]) -> dict[str, Place]:
    """Each variable of `model` (Settings) and its place; TypeError when two fields would read one variable."""
    variables: dict[str, Place] = {}
    for name, info in model.model_fields.items():
        section = _section_type(info.annotation)
        places = [Place(name, field) for field in section.model_fields] if section else [Place(None, name)]
        for place in places:
            variable = f"BULLANT_{place.field.upper()}"
            if variable in variables:
                raise TypeError(f"{variable} is claimed by two fields: {variables[variable]} and {place}")
            variables[variable] = place
    return variables


# Every variable a process reads, and the one field it sets.
VARIABLES: dict[str, Place] = _variables(Settings)
# The same by the lower-case names load_settings' overrides use.
_PLACES: dict[str, Place] = {place.field: place for place in VARIABLES.values()}
_SECTIONS = frozenset(place.section for place in VARIABLES.values() if place.section is not None)


def load_settings(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings from the environment (and config/<env>.env), raising SettingsError on bad values.

    `environ` replaces os.environ (tests pass their own); `overrides` win over everything. Both name settings by
    their variable (BULLANT_PORT, or `port=` as an override), never by section.
    """
    env_vars = dict(os.environ if environ is None else environ)
    raw_env = env_vars.get("BULLANT_ENV", Environment.LOCAL.value).strip().lower()
    try:
        environment = Environment(raw_env)
    except ValueError:
        allowed = ", ".join(e.value for e in Environment)
        raise SettingsError([f"BULLANT_ENV={raw_env!r}: must be one of {allowed}"]) from None
    env_file = CONFIG_DIR / f"{environment.value}.env"
    file_values = _read_env_file(env_file) if env_file.is_file() else {}
    # Precedence: overrides > process environment > config/<env>.env > defaults.
    merged = {**file_values, **{k: v for k, v in env_vars.items() if k.upper().startswith("BULLANT_")}}
    values: dict[str, Any] = {k.upper().removeprefix("BULLANT_").lower(): v for k, v in merged.items()}
    values.update(overrides)
    return _validate(_nest(values), values)


def _nest(values: dict[str, Any]) -> dict[str, Any]:
    """Flat values by field name -> Settings' shape. Unknown names are dropped: unknown BULLANT_* variables are
    ignored (another version of the platform may know them)."""
    nested: dict[str, Any] = {}
    for name, value in values.items():
        place = _PLACES.get(name)
        if place is None:
            continue
        if place.section is None:
            nested[place.field] = value
        else:
            nested.setdefault(place.section, {})[place.field] = value
    return nested


def _validate(nested: dict[str, Any], values: dict[str, Any]) -> Settings:
    try:
        return Settings.model_validate(nested)
    except ValidationError as exc:
        raise SettingsError([_describe(error, values) for error in exc.errors()]) from None


def _read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        if not sep:
            raise SettingsError([f"{path}:{number}: expected NAME=value, got {stripped!r}"])
        values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def _describe(error: Any, values: dict[str, Any]) -> str:
    location = [str(part) for part in error.get("loc", ())]
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    # (section, field, ...) or (field, ...); a section's own rule (one across its fields) names no field.
    if location and location[0] in _SECTIONS:
        location = location[1:]
    field = location[0] if location else ""
    if not field:
        return message
    variable = f"BULLANT_{field.upper()}"
    if field in values:
        value = values[field]
        if field.endswith(("_url", "_urls")) and isinstance(value, str):
            value = redact_url(value)  # a database password is not for the terminal or the log
        return f"{variable}={value!r}: {message}"
    return f"{variable}: {message}"
