"""Who may call each RPC, read from the `(bullant.common.v1.access)` option the contracts put on every method."""

from __future__ import annotations

from functools import cache

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor

from bullant.common.v1 import access_pb2

SCOPES = frozenset({"read", "trade", "admin"})


def rule_of(method: MethodDescriptor) -> access_pb2.AccessRule | None:
    """The access rule of a method, or None when its contract has none (callers must then refuse it)."""
    options = method.GetOptions()
    if not options.HasExtension(access_pb2.access):
        return None
    return options.Extensions[access_pb2.access]


@cache
def rule_for_path(path: str) -> access_pb2.AccessRule | None:
    """The access rule of `/package.Service/Method` as a server sees it; None for unknown methods or ones without a
    rule (health and reflection are not Bullant contracts and have none)."""
    service_name, _, method_name = path.lstrip("/").partition("/")
    try:
        service = descriptor_pool.Default().FindServiceByName(service_name)
    except KeyError:
        return None
    method = service.methods_by_name.get(method_name)
    return None if method is None else rule_of(method)
