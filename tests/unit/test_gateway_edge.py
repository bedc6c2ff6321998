"""The gateway's edge and JSON checks as units: anything unexpected becomes an AIP-193 INTERNAL error with the
request id (the traceback logged, nothing of it sent), every answer carries X-Request-Id, and the nesting bound is
exact and ignores brackets inside strings."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from gateway.edge import Edge, cors_policy
from gateway.jsonfields import MAX_DEPTH, BadRequest, check_nesting

_CORS = cors_policy([], ["GET"], [])


async def _broken(scope: Scope, receive: Receive, send: Send) -> None:
    raise ZeroDivisionError("secret internals")


async def _plain(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def _get(app: Any, **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=Edge(app, cors=_CORS))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        return await http.get("/v1/anything", headers=headers)


async def test_an_unexpected_error_is_an_aip193_internal_error_with_the_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="bullant.gateway"):
        response = await _get(_broken, **{"x-request-id": "req-7"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"] == "req-7"
    error = response.json()["error"]
    assert (error["code"], error["status"], error["message"]) == (500, "INTERNAL", "internal error (request id req-7)")
    assert {"@type": "type.googleapis.com/google.rpc.RequestInfo", "requestId": "req-7"} in error["details"]
    assert "secret internals" not in response.text
    assert any(record.exc_info and "ZeroDivisionError" in caplog.text for record in caplog.records)


async def test_every_answer_carries_a_request_id() -> None:
    given = await _get(_plain, **{"x-request-id": "mine"})
    assert (given.text, given.headers["x-request-id"]) == ("ok", "mine")
    made_up = await _get(_plain, **{"x-request-id": "line\tbreak"})  # cannot travel as gRPC metadata
    assert len(made_up.headers["x-request-id"]) == 32


def _nested(depth: int) -> bytes:
    return json.dumps(json.loads("[" * depth + "]" * depth)).encode()


def test_the_nesting_bound_is_exact_and_strings_do_not_count() -> None:
    check_nesting(_nested(MAX_DEPTH))
    with pytest.raises(BadRequest, match=f"deeper than {MAX_DEPTH} levels"):
        check_nesting(_nested(MAX_DEPTH + 1))
    mixed = b'{"a": [{"b": [1, 2]}, {"c": {}}], "d": "[[[[{{{{\\"]]]"}'
    check_nesting(mixed, limit=4)
    with pytest.raises(BadRequest):
        check_nesting(mixed, limit=3)
    check_nesting(b"[[[[[[", limit=2)  # not JSON: left to the parser, which says so
