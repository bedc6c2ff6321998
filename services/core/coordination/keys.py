"""Namespaced keys and channels, `{app}:{env}:{service}:{key}`, so apps, environments and services never collide."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Parts may not hold ':' (the separator), whitespace, or glob characters: the prefix is then matched literally
# inside every subscription pattern, with no escaping.
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}")
SEPARATOR = ":"


@dataclass(frozen=True, slots=True)
class KeySpace:
    """The namespace of one service in one environment of one app; every key and channel it names starts with
    `{app}:{env}:{service}:`. Keys themselves may contain ':' (`lock:engine`, `quote:AAPL`)."""

    app: str
    env: str
    service: str

    def __post_init__(self) -> None:
        for field_name in ("app", "env", "service"):
            value = getattr(self, field_name)
            if not isinstance(value, str) or not _PART.fullmatch(value):
                raise ValueError(
                    f"KeySpace.{field_name}={value!r}: use 1-63 letters, digits, '_', '.' or '-' "
                    "(no ':', whitespace or glob characters), starting with a letter or digit"
                )

    @property
    def prefix(self) -> str:
        """`{app}:{env}:{service}`, without the trailing separator."""
        return SEPARATOR.join((self.app, self.env, self.service))

    def key(self, *parts: str) -> str:
        """The full key for `parts` joined by ':' (`key("lock", "engine")` → `bullant:prod:signal:lock:engine`)."""
        if not parts or any(not part for part in parts):
            raise ValueError(f"a key needs non-empty parts, got {parts!r}")
        return SEPARATOR.join((self.prefix, *parts))

    def channel(self, name: str) -> str:
        """The full pub-sub channel name for `name`."""
        return self.key(name)

    def pattern(self, pattern: str) -> str:
        """The full pub-sub pattern (Redis glob syntax) for `pattern`, matching only channels of this namespace."""
        return self.key(pattern)

    def scan_pattern(self) -> str:
        """A glob matching every key of this namespace (for SCAN in admin tools and tests)."""
        return f"{self.prefix}{SEPARATOR}*"

    def relative(self, full: str) -> str:
        """`full` without this namespace's prefix; names from elsewhere come back unchanged."""
        head = self.prefix + SEPARATOR
        return full[len(head) :] if full.startswith(head) else full

    def for_service(self, service: str) -> KeySpace:
        """The namespace of another service in the same app and environment (to read its cache, hear its events)."""
        return KeySpace(self.app, self.env, service)
