"""Every IntEnum in the services that mirrors a proto enum says which one in its docstring ("bullant.<pkg>.v1.<Enum>"),
and agrees with it: each member's number is the proto value of the same name (the proto's type prefix removed), and
every value the proto defines, except _UNSPECIFIED, has its member. A proto change the mirror missed fails here."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from enum import IntEnum

import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import EnumDescriptor

import services

# Register every generated file in the default pool.
from bullant.account.v1 import account_pb2  # noqa: F401
from bullant.chat.v1 import chat_pb2  # noqa: F401
from bullant.common.v1 import common_pb2  # noqa: F401
from bullant.market.v1 import market_pb2  # noqa: F401
from bullant.model.v1 import model_pb2  # noqa: F401
from bullant.signal.v1 import signal_pb2  # noqa: F401

_NAMED = re.compile(r"\b(bullant\.\w+\.v1\.\w+)\b")
# Mirrors that cover part of a proto enum on purpose (what they leave out is never produced there).
PARTIAL = {"FitStage"}


def _mirrors() -> list[tuple[type[IntEnum], str | None]]:
    found: dict[str, tuple[type[IntEnum], str | None]] = {}
    for module_info in pkgutil.walk_packages(services.__path__, "services."):
        if ".migrations" in module_info.name:
            continue
        module = importlib.import_module(module_info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, IntEnum) and value is not IntEnum and value.__module__ == module.__name__:
                named = _NAMED.search(inspect.getdoc(value) or "")
                found[f"{value.__module__}.{value.__qualname__}"] = (value, named.group(1) if named else None)
    return [found[key] for key in sorted(found)]


MIRRORS = _mirrors()


def _prefix(descriptor: EnumDescriptor) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", descriptor.name).upper() + "_"


def test_the_services_mirror_proto_enums() -> None:
    assert len(MIRRORS) >= 20


@pytest.mark.parametrize("mirror", [item for item, _ in MIRRORS], ids=lambda item: item.__qualname__)
def test_each_mirror_names_its_proto_enum_and_agrees(mirror: type[IntEnum]) -> None:
    name = dict((item.__qualname__, proto) for item, proto in MIRRORS)[mirror.__qualname__]
    assert name is not None, f"{mirror.__module__}.{mirror.__qualname__}: name the proto enum in the docstring"
    descriptor = descriptor_pool.Default().FindEnumTypeByName(name)
    prefix = _prefix(descriptor)
    proto = {value.name.removeprefix(prefix): value.number for value in descriptor.values}
    for member in mirror:
        proto_name = getattr(member, "proto_name", None)
        if isinstance(proto_name, str):  # a mirror whose member names differ says the proto's name itself
            assert descriptor.values_by_name[proto_name].number == member.value, member
            continue
        if member.value == 0:  # the mirror's own word for "none given" is the proto's _UNSPECIFIED
            assert proto.get("UNSPECIFIED") == 0, f"{mirror.__qualname__}.{member.name} vs {name}"
            continue
        assert proto.get(member.name) == member.value, f"{mirror.__qualname__}.{member.name} vs {name}"
    if mirror.__qualname__ not in PARTIAL:
        mirrored = {member.value for member in mirror}
        missing = sorted(f"{prefix}{key}" for key, number in proto.items() if number and number not in mirrored)
        assert not missing, f"{mirror.__qualname__} lacks {missing}"
