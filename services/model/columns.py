"""The model domain's JSON document columns: one compact, key-sorted form for every table that stores one."""

from __future__ import annotations

import json
from typing import Any


def dump_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
