"""The REST routes, derived from the `google.api.http` annotations of the generated service descriptors (the same
path-template rules as grpc-gateway): adding an annotated RPC to a proto adds its route, with no gateway code."""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

import bullant

_VERBS = ("get", "put", "post", "delete", "patch")
VARIABLE = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_.]*)(?:=([^}]*))?\}")


class TemplateError(ValueError):
    """A path template this gateway cannot serve."""


@dataclass(frozen=True, slots=True)
class Route:
    """One HTTP binding of one RPC."""

    http_method: str
    template: str
    pattern: re.Pattern[str]
    variables: tuple[str, ...]
    body: str
    response_body: str
    method: MethodDescriptor
    request_class: type[Message]
    response_class: type[Message]
    # 0 for the method's main binding, 1… for its additional_bindings.
    binding: int = 0

    @property
    def service(self) -> ServiceDescriptor:
        return self.method.containing_service

    @property
    def full_method(self) -> str:
        return f"/{self.service.full_name}/{self.method.name}"

    @property
    def server_streaming(self) -> bool:
        return bool(self.method.server_streaming)

    def match(self, raw_path: str) -> dict[str, str] | None:
        """The path variables (still percent-encoded) when `raw_path` (percent-encoded) fits the template."""
        found = self.pattern.fullmatch(raw_path)
        if found is None:
            return None
        return dict(zip(self.variables, found.groups(), strict=True))


def _segments_regex(segments: str, *, in_variable: bool) -> str:
    parts = []
    for segment in segments.split("/"):
        if segment == "*":
            parts.append(r"[^/:]+" if in_variable else r"[^/]+")
        elif segment == "**":
            parts.append(r".+")
        elif segment:
            parts.append(re.escape(segment))
        else:
            raise TemplateError("empty path segment")
    return "/".join(parts)


def compile_template(template: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """The regex of a path template (`/v1/alerts/{alert.alert_id}`, `/v1/models/{model_id}:promote`) and its
    variables' field paths, in order."""
    if not template.startswith("/"):
        raise TemplateError(f"{template!r} does not start with /")
    path, verb = template, ""
    last = template.rsplit("/", 1)[-1]
    if ":" in last and "}" not in last.rsplit(":", 1)[1]:
        path, verb = template[: template.rindex(":")], template[template.rindex(":") :]
    variables: list[str] = []
    regex = []
    position = 0
    for found in VARIABLE.finditer(path):
        literal = path[position : found.start()]
        regex.append(re.escape(literal))
        variables.append(found.group(1))
        inner = found.group(2) or "*"
        regex.append("(" + _segments_regex(inner, in_variable=True) + ")")
        position = found.end()
    rest = path[position:]
    if "{" in rest or "}" in rest:
        raise TemplateError(f"unbalanced braces in {template!r}")
    literal_rest = "/".join(
        r"[^/]+" if part == "*" else r".+" if part == "**" else re.escape(part) for part in rest.split("/")
    )
    regex.append(literal_rest)
    regex.append(re.escape(verb))
    return re.compile("".join(regex)), tuple(variables)


def _bindings(rule: http_pb2.HttpRule) -> Iterable[http_pb2.HttpRule]:
    yield rule
    yield from rule.additional_bindings


def routes_of(service: ServiceDescriptor) -> list[Route]:
    """Every HTTP binding of the service's annotated methods."""
    found = []
    for method in service.methods:
        options = method.GetOptions()
        if not options.HasExtension(annotations_pb2.http):
            continue
        for binding, rule in enumerate(_bindings(options.Extensions[annotations_pb2.http])):
            kind = rule.WhichOneof("pattern")
            if kind not in _VERBS:
                continue
            template = getattr(rule, kind)
            pattern, variables = compile_template(template)
            found.append(
                Route(
                    http_method=kind.upper(),
                    template=template,
                    pattern=pattern,
                    variables=variables,
                    body=rule.body,
                    response_body=rule.response_body,
                    method=method,
                    request_class=GetMessageClass(method.input_type),
                    response_class=GetMessageClass(method.output_type),
                    binding=binding,
                )
            )
    return found


def generated_services() -> list[ServiceDescriptor]:
    """The services of every generated `bullant.<domain>.v1` module."""
    services: dict[str, ServiceDescriptor] = {}
    for module_info in pkgutil.walk_packages(bullant.__path__, prefix="bullant."):
        if not module_info.name.endswith("_pb2"):
            continue
        module: Any = importlib.import_module(module_info.name)
        for service in module.DESCRIPTOR.services_by_name.values():
            services[service.full_name] = service
    return [services[name] for name in sorted(services)]


class Router:
    """Finds the route of a request: literal-first, so `/v1/signals:stream` is never read as a signal id."""

    def __init__(self, routes: Sequence[Route]) -> None:
        # Fewer variables first, then longer templates: the more specific template wins.
        self.routes = sorted(routes, key=lambda route: (len(route.variables), -len(route.template)))

    @classmethod
    def from_services(cls, services: Iterable[ServiceDescriptor]) -> Router:
        return cls([route for service in services for route in routes_of(service)])

    def find(self, http_method: str, raw_path: str) -> tuple[Route, dict[str, str]] | list[str]:
        """The route and its path variables (still percent-encoded), or the HTTP methods the path allows (empty: no
        such path)."""
        allowed = []
        for route in self.routes:
            variables = route.match(raw_path)
            if variables is None:
                continue
            if route.http_method == http_method:
                return route, variables
            allowed.append(route.http_method)
        return allowed
