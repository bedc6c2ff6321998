"""The contract's request rules, enforced before any handler runs: every method refuses an oversize message before
parsing it, every declared field limit is refused with a violation naming the field and the limit, the server
keeps answering meanwhile, requests at a limit pass, and the gateway and its OpenAPI document say the same."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bullant.common.v1 import common_pb2
from bullant.model.v1 import model_pb2
from bullant.signal.v1 import signal_pb2
from gateway.openapi import openapi_document
from gateway.routes import Router, generated_services
from services.core.rules import JSON_BODY_FACTOR, field_rule, max_request_bytes
from services.core.settings import BUILT_SERVICES
from tests.account_platform import violations_of
from tests.gateway_platform import GatewayPlatform, running_gateway
from tests.signal_platform import stamp

# A hang guard only: the calls below answer at once; a server whose event loop is stuck never does.
HANG_GUARD = 120.0
LARGEST = 16 * 1024 * 1024


@pytest.fixture
async def platform() -> AsyncIterator[GatewayPlatform]:
    # A transport limit above every method's own, so each method's limit is what refuses.
    async with running_gateway(max_message_bytes=2 * LARGEST) as running:
        yield running


def _methods() -> Iterator[MethodDescriptor]:
    """The methods of every service that is served (one with a contract only answers UNIMPLEMENTED, before any
    check)."""
    for service in generated_services():
        if service.name.removesuffix("Service").lower() in BUILT_SERVICES:
            yield from service.methods


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def _metadata(platform: GatewayPlatform) -> tuple[tuple[str, str], ...]:
    return tuple(platform.bearer(1, ("read", "trade"), admin=True).items())


async def _call(channel: grpc.aio.Channel, method: MethodDescriptor, payloads: list[bytes], metadata: Any) -> Any:
    """Sends raw request bytes to any method; the first response (or the refusal)."""
    identity = {"request_serializer": lambda raw: raw, "response_deserializer": lambda raw: raw}
    path = _path(method)
    if method.client_streaming:

        async def requests() -> AsyncIterator[bytes]:
            for payload in payloads:
                yield payload

        return await channel.stream_unary(path, **identity)(requests(), metadata=metadata)
    if method.server_streaming:
        call = channel.unary_stream(path, **identity)(payloads[0], metadata=metadata)
        try:
            return await call.read()
        finally:
            call.cancel()
    return await channel.unary_unary(path, **identity)(payloads[0], metadata=metadata)


async def _refused(coroutine: Any) -> grpc.aio.AioRpcError:
    try:
        await asyncio.wait_for(coroutine, HANG_GUARD)
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("the call was accepted")


async def _health(channel: grpc.aio.Channel) -> int:
    """The health service's answer, asked while a large request is being refused: the event loop is free."""
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    return int(reply.status)


ANSWERED = (health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING)


def _oversize(limit: int) -> bytes:
    """A well-formed message one byte over `limit`: one unknown length-delimited field (number 1000)."""
    tag = bytes([0xC2, 0x3E])  # field 1000, wire type 2
    body = limit + 1 - len(tag) - 4
    return (
        tag
        + bytes([0x80 | (body & 0x7F), 0x80 | ((body >> 7) & 0x7F), 0x80 | ((body >> 14) & 0x7F), body >> 21])
        + (b"x" * body)
    )


async def test_every_method_refuses_an_oversize_message_before_parsing_it(platform: GatewayPlatform) -> None:
    metadata = _metadata(platform)
    async with grpc.aio.insecure_channel(platform.server.address) as channel:
        for method in _methods():
            limit = max_request_bytes(method)
            payload = _oversize(limit)
            assert len(payload) == limit + 1
            error, status = await asyncio.gather(
                _refused(_call(channel, method, [payload], metadata)), _health(channel)
            )
            assert status in ANSWERED
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (_path(method), error.details())
            assert f"at most {limit}" in (error.details() or ""), _path(method)


def _backtest(symbols: list[str]) -> signal_pb2.RunBacktestRequest:
    config = signal_pb2.BacktestConfig(
        strategy_id="golden_cross", symbols=symbols, timeframe=common_pb2.TIMEFRAME_1D, initial_cash=10_000.0
    )
    config.range.start_time.CopyFrom(stamp(datetime(2025, 3, 3)))
    return signal_pb2.RunBacktestRequest(config=config)


async def test_a_60000_symbol_backtest_is_refused_before_any_per_symbol_work(platform: GatewayPlatform) -> None:
    metadata = _metadata(platform)
    async with grpc.aio.insecure_channel(platform.server.address) as channel:
        stub = signal_pb2.DESCRIPTOR.services_by_name["SignalService"].methods_by_name["RunBacktest"]
        # The report's request: 60,000 symbols, 720 KB. Refused by its size, never parsed; health answers meanwhile.
        huge = _backtest([f"SYM-{index:06d}" for index in range(60_000)]).SerializeToString()
        assert len(huge) > 700_000
        error, status = await asyncio.gather(_refused(_call(channel, stub, [huge], metadata)), _health(channel))
        assert status in ANSWERED
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "at most 262144" in (error.details() or "")
        # Within the size but past the count, with every symbol invalid and repeated: the count alone is reported,
        # no symbol is looked at.
        many = _backtest(["bad!"] * 20_000).SerializeToString()
        error, status = await asyncio.gather(_refused(_call(channel, stub, [many], metadata)), _health(channel))
        assert status in ANSWERED
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violations_of(error) == {"config.symbols": "must have at most 50 elements, got 20000"}
        # At the limit the rules pass (the symbols are then looked up: unknown ones are not found).
        fifty = _backtest([f"S{index}" for index in range(50)]).SerializeToString()
        error = await _refused(_call(channel, stub, [fifty], metadata))
        assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()


def _set_over_limit(message: Message, path: list[FieldDescriptor]) -> str:
    """Puts a value one past the declared limit of the field at the end of `path` (creating the messages on the way);
    the limit's words."""
    target = message
    for field in path[:-1]:
        target = getattr(target, field.name)
    words = _over_limit(path[-1], target)
    assert words is not None
    return words


def _over_limit(field: FieldDescriptor, target: Message) -> str | None:
    """Puts a value one past the field's declared limit in `target`; the limit's words, None when it has none."""
    rule = field_rule(field)
    rules = rule.rules
    if rules.HasField("max_items"):
        count = rules.max_items + 1
        if rule.is_map:
            entries = getattr(target, field.name)
            value_field = field.message_type.fields_by_name["value"]  # type: ignore[union-attr]
            for index in range(count):
                if value_field.message_type is None:
                    entries[f"p{index}"] = 1
                else:
                    entries[f"p{index}"].SetInParent()
            return f"at most {rules.max_items}"
        values = getattr(target, field.name)
        for _ in range(count):
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                values.add()
            elif field.type == FieldDescriptor.TYPE_STRING:
                values.append("A")
            else:
                values.append(1)
        return f"at most {rules.max_items}"
    if rules.HasField("max_len"):
        filler: Any = "A" * (rules.max_len + 1)
        if field.type == FieldDescriptor.TYPE_BYTES:
            filler = filler.encode()
        if rule.is_repeated:
            getattr(target, field.name).append(filler)
        else:
            setattr(target, field.name, filler)
        return f"at most {rules.max_len}"
    return None


def _limited_fields(descriptor: Descriptor, prefix: list[FieldDescriptor], depth: int = 0) -> Iterator[list[Any]]:
    for field in descriptor.fields:
        rule = field_rule(field)
        if rule.output_only:
            continue
        path = [*prefix, field]
        if rule.rules.HasField("max_items") or (rule.rules.HasField("max_len") and not rule.is_map):
            yield path
        message = field.message_type
        if message is not None and not field.is_repeated and depth < 4 and not message.full_name.startswith("google."):
            yield from _limited_fields(message, path, depth + 1)


def _violation_path(path: list[FieldDescriptor]) -> str:
    names = ".".join(field.name for field in path)
    last = field_rule(path[-1])
    return f"{names}[0]" if last.is_repeated and not last.rules.HasField("max_items") else names


async def test_every_declared_field_limit_is_refused_with_the_field_and_the_limit(platform: GatewayPlatform) -> None:
    metadata = _metadata(platform)
    checked = 0
    async with grpc.aio.insecure_channel(platform.server.address) as channel:
        for method in _methods():
            request_class = GetMessageClass(method.input_type)
            for path in _limited_fields(method.input_type, []):
                request: Any = request_class()
                if "update_mask" in request.DESCRIPTOR.fields_by_name:
                    request.update_mask.paths.append("*")
                words = _set_over_limit(request, path)
                payload = request.SerializeToString()
                assert len(payload) <= max_request_bytes(method), _path(method)
                error = await _refused(_call(channel, method, [payload], metadata))
                where = _violation_path(path)
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (_path(method), where, error.details())
                found = violations_of(error)
                assert where in found, (_path(method), where, found)
                assert words in found[where], (where, found[where])
                checked += 1
    assert checked > 100


async def test_limits_at_and_past_the_edge_over_grpc_and_rest(platform: GatewayPlatform) -> None:
    metadata = _metadata(platform)
    headers = platform.bearer(1, ("read", "trade"), admin=True)
    async with grpc.aio.insecure_channel(platform.server.address) as channel:
        market = generated_services()
        quotes = next(service for service in market if service.name == "MarketService").methods_by_name[
            "BatchGetQuotes"
        ]
        request_class: Any = GetMessageClass(quotes.input_type)
        at_limit = request_class(symbols=[f"Q{index}" for index in range(200)]).SerializeToString()
        error = await _refused(_call(channel, quotes, [at_limit], metadata))
        assert error.code() == grpc.StatusCode.NOT_FOUND  # past the rules, to the catalogue
        past = request_class(symbols=[f"Q{index}" for index in range(201)]).SerializeToString()
        error = await _refused(_call(channel, quotes, [past], metadata))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violations_of(error) == {"symbols": "must have at most 200 elements, got 201"}
        predict = model_pb2.DESCRIPTOR.services_by_name["ModelService"].methods_by_name["Predict"]
        for horizon, code in ((500, grpc.StatusCode.NOT_FOUND), (501, grpc.StatusCode.INVALID_ARGUMENT)):
            request = model_pb2.PredictRequest(symbol="NOPE", timeframe=common_pb2.TIMEFRAME_1D, horizon_bars=horizon)
            error = await _refused(_call(channel, predict, [request.SerializeToString()], metadata))
            assert error.code() == code, (horizon, error.details())
    http = platform.http
    at = await http.get("/v1/quotes:batchGet", params=[("symbols", f"Q{i}") for i in range(200)], headers=headers)
    assert at.status_code == 404, at.text
    over = await http.get("/v1/quotes:batchGet", params=[("symbols", f"Q{i}") for i in range(201)], headers=headers)
    assert over.status_code == 400, over.text
    violation = over.json()["error"]["details"][0]["fieldViolations"][0]
    assert violation == {"field": "symbols", "description": "must have at most 200 elements, got 201"}
    for horizon, status in ((500, 404), (501, 400)):
        body = {"symbol": "NOPE", "timeframe": "TIMEFRAME_1D", "horizonBars": horizon}
        answer = await http.post("/v1/models:predict", json=body, headers=headers)
        assert answer.status_code == status, answer.text
    # The body limit of a route is its method's declared size: 4 × 64 KiB for an alert, far more for an import.
    alert = {"symbol": "NOPE", "timeframe": "TIMEFRAME_1D", "strategyId": "x", "displayName": "d" * 300_000}
    answer = await http.post("/v1/alerts", json=alert, headers=headers)
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"]["details"][0]["reason"] == "REQUEST_TOO_LARGE"
    # Within the JSON limit but past the encoded one: refused by the gateway before it is sent.
    alert["displayName"] = "d" * 100_000
    answer = await http.post("/v1/alerts", json=alert, headers=headers)
    assert answer.status_code == 413, answer.text
    assert "accepts at most 65536" in answer.json()["error"]["message"]


def _flat(schema: Any) -> dict[str, list[Any]]:
    """Every keyword of a schema and of the schemas inside it, with its values."""
    found: dict[str, list[Any]] = {}
    stack = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                found.setdefault(key, []).append(value)
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return found


def test_the_openapi_document_carries_every_declared_limit() -> None:
    routes = Router.from_services(generated_services()).routes
    document = openapi_document(routes)
    schemas = document["components"]["schemas"]
    checked = 0
    for route in routes:
        for rule in map(field_rule, route.method.input_type.fields):
            if rule.output_only or rule.field.message_type is not None:
                continue
            name = route.method.input_type.full_name
            if name not in schemas:
                continue  # a GET's request: its fields are query parameters, checked below
            schema = schemas[name]["properties"][rule.field.json_name]
            keywords = _flat(schema)
            rules: Any = rule.rules
            if rules.HasField("max_len"):
                assert "maxLength" in keywords, (name, rule.field.name, schema)
            if rules.pattern:
                assert any(rules.pattern in pattern for pattern in keywords["pattern"]), (name, rule.field.name)
            if rules.HasField("max_items"):
                assert rules.max_items in keywords.get("maxItems", []) + keywords.get("maxProperties", []), name
            for bound in ("min", "greater_than"):
                if rules.HasField(bound) and rule.field.type == FieldDescriptor.TYPE_INT64:
                    assert keywords["pattern"] == ["^[1-9][0-9]{0,17}$"], (name, rule.field.name, schema)
                elif rules.HasField(bound):
                    assert getattr(rules, bound) in keywords["minimum"], (name, rule.field.name, schema)
            for bound in ("max", "less_than"):
                if rules.HasField(bound):
                    assert getattr(rules, bound) in keywords["maximum"], (name, rule.field.name, schema)
            if rules.choices:
                assert list(rules.choices) in keywords["enum"], (name, rule.field.name, schema)
            if rule.required:
                assert rule.field.json_name in schemas[name].get("required", []), (name, rule.field.name)
            checked += 1
    assert checked > 50
    batch = document["paths"]["/v1/quotes:batchGet"]["get"]["parameters"][0]
    assert batch["schema"]["maxItems"] == 200
    assert batch["required"] is True
    bars = document["paths"]["/v1/instruments/{symbol}/bars"]["get"]["parameters"]
    timeframe = next(parameter for parameter in bars if parameter["name"] == "timeframe")
    assert timeframe["required"]
    assert "TIMEFRAME_UNSPECIFIED" not in timeframe["schema"]["enum"]
    imports = document["paths"]["/v1/instruments/{symbol}/bars:import"]["post"]["requestBody"]["description"]
    assert f"at most {JSON_BODY_FACTOR * 16 * 1024 * 1024} bytes" in imports


def test_every_list_declares_its_page_size_and_page_token_limits() -> None:
    """services/core/paging.py checks neither: every List request declares them, and the server enforces them."""
    lists = [method for method in _methods() if "page_token" in method.input_type.fields_by_name]
    assert len(lists) > 10
    for method in lists:
        fields = method.input_type.fields_by_name
        token, size = field_rule(fields["page_token"]).rules, field_rule(fields["page_size"]).rules
        assert (token.max_len, token.reason) == (1024, "PAGE_TOKEN_INVALID"), _path(method)
        assert (size.HasField("min"), size.min) == (True, 0), _path(method)


def test_the_openapi_document_says_what_the_gateway_and_the_rules_accept() -> None:
    """Where the JSON mapping or a method's own judgement bounds a value, the document says so too: 64-bit integers
    as strings of digits that fit, 32-bit ones within their range, a format only for a value that is given, a
    required oneof, and the formats whose values only the server can judge, described."""
    document = openapi_document(Router.from_services(generated_services()).routes)
    schemas = document["components"]["schemas"]
    assert schemas["bullant.model.v1.TrainModelRequest"]["properties"]["seed"]["pattern"] == "^-?[0-9]{1,18}$"
    size = schemas["bullant.signal.v1.BacktestConfig"]["properties"]["maxEquityPoints"]
    assert (size["anyOf"][1]["minimum"], size["anyOf"][1]["maximum"]) == (2, 100_000)
    parameters = document["paths"]["/v1/alerts"]["get"]["parameters"]
    page_size = next(item for item in parameters if item["name"] == "page_size")["schema"]
    assert (page_size["minimum"], page_size["maximum"]) == (0, 2**31 - 1)
    # An optional field's format describes a value that is given: "" (not given) is valid too.
    address = schemas["bullant.account.v1.EmailChannel"]["properties"]["address"]
    assert "format" not in address
    assert address["anyOf"] == [{"enum": [""]}, {"format": "email"}]
    token = next(item for item in parameters if item["name"] == "page_token")["schema"]
    assert token["anyOf"] == [{"enum": [""]}, {"format": "page-token"}]
    assert "PAGE_TOKEN_INVALID" in token["description"]
    password = schemas["bullant.account.v1.RegisterRequest"]["properties"]["password"]
    assert (password["format"], password["minLength"]) == ("password", 10)
    assert "PASSWORD_TOO_WEAK" in password["description"]
    disable = schemas["bullant.account.v1.DisableTotpRequest"]
    assert disable["anyOf"] == [{"required": ["totpCode"]}, {"required": ["recoveryCode"]}]
    assert schemas["bullant.common.v1.ParameterValue"]["anyOf"][0] == {"required": ["intValue"]}
