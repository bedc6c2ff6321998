"""The pages behind the links the account service mails (services/core/links.py). People open them in a browser, so
they answer small, plain HTML – no script, nothing loaded from elsewhere, every value escaped – saying what happened,
and they reach the account service over gRPC like every other route. Opening a verification link verifies the email
(VerifyEmail); opening a reset link changes nothing and shows a form, whose POST sets the password (ResetPassword)."""

from __future__ import annotations

import base64
import hashlib
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from bullant.account.v1 import account_pb2
from gateway.errors import http_error_body
from gateway.protojson import dumps
from gateway.transcode import BadRequest, call_metadata
from services.core.clients import ClientFactory
from services.core.grpc_errors import error_reason

_ACCOUNT = account_pb2.DESCRIPTOR.services_by_name["AccountService"]
FORM_BODY_LIMIT = 16 * 1024
_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:34rem;margin:4rem auto;padding:0 1rem;color:#1b1b1b}"
    "h1{font-size:1.4rem}label,input,button{display:block;font:inherit}input{margin:.3rem 0 1rem;padding:.4rem;"
    "width:100%;box-sizing:border-box}button{padding:.5rem 1rem}.note{color:#555;font-size:.9rem}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
# No script at all, the one inline style by its hash, forms only back to this gateway, never framed, and the token in
# the address never sent on as a Referer.
SECURITY_HEADERS = {
    "content-security-policy": (
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    ),
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a page says: its HTTP status, a heading and a sentence (plain text, escaped when written)."""

    status: int
    heading: str
    text: str


_INCOMPLETE = Outcome(400, "This link is incomplete", "Copy the whole link from the email into the address bar.")
_VERIFY_REFUSALS = {
    "VERIFICATION_TOKEN_EXPIRED": Outcome(
        400,
        "This verification link has expired",
        "Sign in and ask for a new verification email; its link works for a limited time.",
    ),
    "VERIFICATION_TOKEN_INVALID": Outcome(
        400,
        "This verification link does not work",
        "It was used already or replaced by a newer link. If your email is not verified yet, sign in and ask for "
        "a new verification email.",
    ),
}
_RESET_REFUSALS = {
    "RESET_TOKEN_EXPIRED": Outcome(
        400, "This reset link has expired", "Ask for a new password reset email; its link works for a limited time."
    ),
    "RESET_TOKEN_INVALID": Outcome(
        400,
        "This reset link does not work",
        "It was used already or replaced by a newer link. Ask for a new password reset email if you still need one.",
    ),
}


class LinkPages:
    """GET /verify-email, GET and POST /reset-password."""

    def __init__(self, clients: ClientFactory, timeout_seconds: float) -> None:
        self._clients = clients
        self._timeout = timeout_seconds

    async def verify_email(self, request: Request, request_id: str) -> Response:
        token = request.query_params.get("token", "")
        if not token:
            return _page(_INCOMPLETE)
        if request.method == "HEAD":  # a link checker looking, not a person opening it: nothing is used up
            return _page(Outcome(200, "Verify your email address", "Open this link in a browser to verify it."))
        try:
            reply = await self._call(
                "VerifyEmail",
                account_pb2.VerifyEmailRequest(token=token),
                account_pb2.VerifyEmailResponse,
                request,
                request_id,
            )
        except grpc.aio.AioRpcError as error:
            return _refused(error, _VERIFY_REFUSALS, request_id)
        except BadRequest as error:
            return _page(Outcome(400, "This request cannot be read", error.description))
        email = reply.account.email
        return _page(Outcome(200, "Your email address is verified", f"{email} may now sign in and trade."))

    async def reset_password(self, request: Request, request_id: str) -> Response:
        if request.method != "POST":
            token = request.query_params.get("token", "")
            return _reset_form(token) if token else _page(_INCOMPLETE)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return _json_error(415, "send the form as application/x-www-form-urlencoded")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > FORM_BODY_LIMIT:
                return _json_error(413, f"the form is larger than {FORM_BODY_LIMIT} bytes")
        try:
            fields = dict(parse_qsl(body.decode("latin-1"), keep_blank_values=True, errors="strict", max_num_fields=8))
        except (ValueError, UnicodeDecodeError):
            return _json_error(400, "the form is not URL-encoded UTF-8 text")
        token, password = fields.get("token", ""), fields.get("new_password", "")
        if not token:
            return _page(_INCOMPLETE)
        try:
            await self._call(
                "ResetPassword",
                account_pb2.ResetPasswordRequest(token=token, new_password=password),
                account_pb2.ResetPasswordResponse,
                request,
                request_id,
            )
        except grpc.aio.AioRpcError as error:
            problems = _violations(error).get("new_password")
            if error.code() is grpc.StatusCode.INVALID_ARGUMENT and problems:
                return _reset_form(token, f"The new password was not accepted: it {problems}.")
            return _refused(error, _RESET_REFUSALS, request_id)
        except BadRequest as error:
            return _page(Outcome(400, "This request cannot be read", error.description))
        return _page(
            Outcome(
                200,
                "Your password is changed",
                "Every session of your account was signed out: sign in again with the new password.",
            )
        )

    async def _call(self, method: str, message: Any, response_class: Any, request: Request, request_id: str) -> Any:
        call = self._clients.channel(_ACCOUNT, propagate=False).unary_unary(
            f"/{_ACCOUNT.full_name}/{method}",
            request_serializer=type(message).SerializeToString,
            response_deserializer=response_class.FromString,
        )
        metadata = call_metadata(request, request_id, credentials=False)
        return await call(message, metadata=metadata, timeout=self._timeout)


def _refused(error: grpc.aio.AioRpcError, known: dict[str, Outcome], request_id: str) -> Response:
    """The page of a refusal: the reasons the account service gives for a link, else what the status code means."""
    found = known.get(error_reason(error))
    if found is not None:
        return _page(found)
    code = error.code()
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        wait = _retry_after(error)
        outcome = Outcome(429, "Too many attempts", f"Wait {wait} seconds, then open the link again.")
        return _page(outcome, {"retry-after": str(wait)})
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
        return _page(Outcome(400, "This link does not work", "Copy the whole link from the most recent email."))
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return _page(Outcome(503, "Please try again in a minute", "The account service cannot answer right now."))
    return _page(
        Outcome(500, "Something went wrong on our side", f"Try again later. The reference of this error: {request_id}.")
    )


def _violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    """Field → the service's descriptions (joined) of a BadRequest detail."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    found: dict[str, list[str]] = {}
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            for violation in bad.field_violations:
                found.setdefault(violation.field, []).append(violation.description)
    return {field: "; ".join(descriptions) for field, descriptions in found.items()}


def _retry_after(error: grpc.aio.AioRpcError) -> int:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return max(1, math.ceil(int(info.retry_delay.seconds) + int(info.retry_delay.nanos) / 1e9))
    return 60


def _document(heading: str, body: Sequence[str]) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><meta name="robots" content="noindex">'
        f"<title>{html.escape(heading)} · Bullant</title><style>{_STYLE}</style></head>\n"
        f"<body><h1>{html.escape(heading)}</h1>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _page(outcome: Outcome, headers: dict[str, str] | None = None) -> HTMLResponse:
    content = _document(outcome.heading, [f"<p>{html.escape(outcome.text)}</p>"])
    return HTMLResponse(content, status_code=outcome.status, headers={**SECURITY_HEADERS, **(headers or {})})


def _reset_form(token: str, problem: str = "") -> HTMLResponse:
    """The form that sets a new password (the relative action posts back to this page's own path)."""
    body = []
    if problem:
        body.append(f'<p class="note" role="alert">{html.escape(problem)}</p>')
    body += [
        "<p>Choose a new password for your Bullant account. Every session will be signed out.</p>",
        '<form method="post" action="reset-password">',
        f'<input type="hidden" name="token" value="{html.escape(token, quote=True)}">',
        '<label for="new_password">New password</label>',
        '<input id="new_password" name="new_password" type="password" autocomplete="new-password" required>',
        '<button type="submit">Set the new password</button>',
        "</form>",
    ]
    status = 400 if problem else 200
    return HTMLResponse(_document("Set a new password", body), status_code=status, headers=SECURITY_HEADERS)


def _json_error(status: int, message: str) -> Response:
    return Response(dumps(http_error_body(status, message)), status_code=status, media_type="application/json")
