"""gRPC adapter of the account domain: validates and decodes requests, calls the domain, encodes responses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import grpc

from bullant.account.v1 import account_pb2, account_pb2_grpc
from services.account.client import client_info, parse_networks
from services.account.encoding import (
    account_message,
    api_key_message,
    naive_utc,
    profile_from_message,
    profile_message,
    session_message,
    timestamp,
)
from services.account.factors import SecondFactor
from services.account.models import AccountState, Role, TokenPair
from services.account.runtime import build_runtime
from services.account.service import AccountService, Registration
from services.account.validation import check_password, normalize_email
from services.core.auth.identity import Credential, Identity, require_identity
from services.core.db.databases import utc_now
from services.core.dependencies import Dependencies
from services.core.errors import FieldViolation, InvalidArgument, PermissionDenied, Unavailable
from services.core.paging import COUNT, Cursor, PageTokens, keyset_cursor, page_size
from services.core.server import ServiceRegistration

SERVICE = account_pb2.DESCRIPTOR.services_by_name["AccountService"]
Context = grpc.aio.ServicerContext[Any, Any]


class Checks:
    """Collects every violation of the rules a request's contract cannot declare (an email's normal form, a
    password's strength), so the client learns about all of them at once. Lengths, patterns, ranges and required
    fields are the contract's declared rules (protos/bullant/account/v1/account.proto), checked by the server before
    a handler runs."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []
        # The reason of the first check that named one (EMAIL_INVALID, PASSWORD_TOO_WEAK), for ErrorInfo.
        self.reason: str | None = None

    def email(self, field: str, value: str) -> str:
        try:
            return normalize_email(value, field=field)
        except InvalidArgument as error:
            self._add(error)
            return ""

    def new_password(self, field: str, value: str, email: str) -> None:
        """The password policy, checked with the other fields so every problem is reported at once."""
        try:
            check_password(value, email=email, field=field)
        except InvalidArgument as error:
            self._add(error)

    def _add(self, error: InvalidArgument) -> None:
        self.violations.extend(error.violations)
        self.reason = self.reason or error.reason

    def done(self) -> None:
        if self.violations:
            raise InvalidArgument(self.violations, reason=self.reason)


def _second_factor(message: Any) -> SecondFactor | None:
    which = message.WhichOneof("second_factor")
    if which is None:
        return None
    value = getattr(message, which)
    return SecondFactor(totp_code=value) if which == "totp_code" else SecondFactor(recovery_code=value)


def _token_fields(pair: TokenPair) -> dict[str, Any]:
    """The fields LoginResponse and RefreshResponse share."""
    return {
        "access_token": pair.access_token,
        "access_token_expire_time": timestamp(pair.access_expire_time),
        "refresh_token": pair.refresh_token,
        "refresh_token_expire_time": timestamp(pair.refresh_expire_time),
        "token_type": "Bearer",
        "session_id": pair.session_id,
        "account": account_message(pair.account),
        "scopes": list(pair.scopes),
    }


def _session_identity() -> Identity:
    identity = require_identity()
    if identity.credential is not Credential.SESSION or identity.session_id is None:
        raise PermissionDenied("this method needs a signed-in session, not an API key", reason="SESSION_REQUIRED")
    return identity


def _admin() -> Identity:
    identity = require_identity()
    if not identity.is_admin:
        raise PermissionDenied("this method is for admins", reason="ROLE_MISSING")
    return identity


# What each list's page tokens hold.
_SESSIONS_CURSOR = keyset_cursor("account.ListSessions")
_API_KEYS_CURSOR = keyset_cursor("account.ListApiKeys")
_USERS_CURSOR = Cursor.of("account.ListUsers", after=COUNT)


class AccountServicer(account_pb2_grpc.AccountServiceServicer):
    """bullant.account.v1.AccountService."""

    def __init__(
        self,
        service: AccountService,
        trusted_proxies: list[str],
        *,
        pages: PageTokens,
        draining: asyncio.Event | None = None,
    ) -> None:
        self._service = service
        self._trusted = parse_networks(trusted_proxies)
        self._pages = pages
        # Set when the server shuts down: WatchCredential streams end then.
        self._draining = draining or asyncio.Event()

    def _keyset(self, cursor: Cursor, token: str, query: str = "") -> tuple[datetime, str] | None:
        position = self._pages.decode(cursor, token, query=query)
        return (position["t"], position["id"]) if position else None

    def _next_token(self, cursor: Cursor, more: bool, moment: datetime, item_id: str, query: str = "") -> str:
        return self._pages.encode(cursor, {"t": moment, "id": item_id}, query=query) if more else ""

    def _now(self) -> datetime:
        return self._service.runtime.now()

    # -- registration, verification, passwords ---------------------------------------------------------------------

    async def Register(self, request: account_pb2.RegisterRequest, context: Context) -> account_pb2.RegisterResponse:
        checks = Checks()
        email = checks.email("email", request.email)
        checks.new_password("password", request.password, email)
        checks.done()
        details = Registration(
            display_name=request.display_name,
            timezone=request.timezone,
            locale=request.locale,
            request_id=request.request_id,
            ip_address=client_info(context, self._trusted).ip_address,
        )
        try:
            account = await self._service.register(email, request.password, details)
        except InvalidArgument as error:
            # The initial profile is validated as a profile; name the request's own fields.
            renamed = [FieldViolation(v.field.removeprefix("profile."), v.description) for v in error.violations]
            raise InvalidArgument(renamed, reason=error.reason) from None
        return account_pb2.RegisterResponse(account=account_message(account))

    async def VerifyEmail(
        self, request: account_pb2.VerifyEmailRequest, context: Context
    ) -> account_pb2.VerifyEmailResponse:
        account = await self._service.verify_email(request.token)
        return account_pb2.VerifyEmailResponse(account=account_message(account))

    async def ResendVerificationEmail(
        self, request: account_pb2.ResendVerificationEmailRequest, context: Context
    ) -> account_pb2.ResendVerificationEmailResponse:
        identity = _session_identity()
        await self._service.resend_verification(identity.account_id)
        expire = self._now() + self._service.runtime.policy.verification_token_ttl
        return account_pb2.ResendVerificationEmailResponse(expire_time=timestamp(expire))

    async def RequestPasswordReset(
        self, request: account_pb2.RequestPasswordResetRequest, context: Context
    ) -> account_pb2.RequestPasswordResetResponse:
        checks = Checks()
        email = checks.email("email", request.email)
        checks.done()
        await self._service.request_password_reset(email, client_info(context, self._trusted).ip_address)
        return account_pb2.RequestPasswordResetResponse()

    async def ResetPassword(
        self, request: account_pb2.ResetPasswordRequest, context: Context
    ) -> account_pb2.ResetPasswordResponse:
        await self._service.reset_password(request.token, request.new_password)
        return account_pb2.ResetPasswordResponse()

    async def ChangePassword(
        self, request: account_pb2.ChangePasswordRequest, context: Context
    ) -> account_pb2.ChangePasswordResponse:
        identity = _session_identity()
        revoked = await self._service.change_password(
            identity.account_id, identity.session_id or "", request.current_password, request.new_password
        )
        return account_pb2.ChangePasswordResponse(revoked_session_count=revoked)

    # -- sessions ---------------------------------------------------------------------------------------------------

    async def Login(self, request: account_pb2.LoginRequest, context: Context) -> account_pb2.LoginResponse:
        checks = Checks()
        email = checks.email("email", request.email)
        checks.done()
        client = client_info(context, self._trusted, device_name=request.device_name, user_agent=request.user_agent)
        pair = await self._service.sessions.login(email, request.password, _second_factor(request), client)
        return account_pb2.LoginResponse(**_token_fields(pair))

    async def Refresh(self, request: account_pb2.RefreshRequest, context: Context) -> account_pb2.RefreshResponse:
        pair = await self._service.sessions.refresh(request.refresh_token, client_info(context, self._trusted))
        return account_pb2.RefreshResponse(**_token_fields(pair))

    async def Logout(self, request: account_pb2.LogoutRequest, context: Context) -> account_pb2.LogoutResponse:
        identity = _session_identity()
        revoked = await self._service.sessions.logout(
            identity.account_id, identity.session_id or "", all_sessions=request.all_sessions
        )
        return account_pb2.LogoutResponse(revoked_session_count=revoked)

    async def ListSessions(
        self, request: account_pb2.ListSessionsRequest, context: Context
    ) -> account_pb2.ListSessionsResponse:
        identity = _session_identity()
        size = page_size(request.page_size)
        sessions, more = await self._service.sessions.list(
            identity.account_id, after=self._keyset(_SESSIONS_CURSOR, request.page_token), limit=size
        )
        last = sessions[-1] if sessions else None
        return account_pb2.ListSessionsResponse(
            sessions=[session_message(s, identity.session_id) for s in sessions],
            next_page_token=(
                self._next_token(_SESSIONS_CURSOR, more, last.last_use_time, last.session_id) if last else ""
            ),
        )

    async def RevokeSession(
        self, request: account_pb2.RevokeSessionRequest, context: Context
    ) -> account_pb2.RevokeSessionResponse:
        identity = _session_identity()
        await self._service.sessions.revoke(identity.account_id, request.session_id)
        return account_pb2.RevokeSessionResponse()

    # -- account and profile ----------------------------------------------------------------------------------------

    async def GetAccount(
        self, request: account_pb2.GetAccountRequest, context: Context
    ) -> account_pb2.GetAccountResponse:
        identity = require_identity()
        account = await self._service.runtime.account(identity.account_id)
        api_key = identity.credential is Credential.API_KEY
        return account_pb2.GetAccountResponse(
            account=account_message(account),
            scopes=list(identity.scopes),
            session_id="" if api_key else identity.session_id or "",
            api_key_id=identity.credential_id if api_key else "",
        )

    async def WatchCredential(
        self, request: account_pb2.WatchCredentialRequest, context: Context
    ) -> AsyncIterator[account_pb2.WatchCredentialResponse]:
        identity = require_identity()
        api_key = identity.credential is Credential.API_KEY
        reply = account_pb2.WatchCredentialResponse(
            account_id=identity.account_id,
            scopes=list(identity.scopes),
            session_id="" if api_key else identity.session_id or "",
            api_key_id=identity.credential_id if api_key else "",
        )
        if identity.expires_at is not None:
            reply.expire_time.FromSeconds(int(identity.expires_at))
        yield reply
        # Nothing more to say: the credential watch every stream runs under (services.core.auth.watch) ends this one
        # with the refusal when the credential ends.
        await self._draining.wait()
        raise Unavailable("the server is shutting down: watch again", reason="SERVER_DRAINING")

    async def GetProfile(
        self, request: account_pb2.GetProfileRequest, context: Context
    ) -> account_pb2.GetProfileResponse:
        identity = require_identity()
        return account_pb2.GetProfileResponse(profile=profile_message(await self._service.profile(identity.account_id)))

    async def UpdateProfile(
        self, request: account_pb2.UpdateProfileRequest, context: Context
    ) -> account_pb2.UpdateProfileResponse:
        identity = require_identity()
        paths = list(request.update_mask.paths)
        profile = await self._service.update_profile(identity.account_id, profile_from_message(request.profile), paths)
        return account_pb2.UpdateProfileResponse(profile=profile_message(profile))

    # -- TOTP -------------------------------------------------------------------------------------------------------

    async def EnrollTotp(
        self, request: account_pb2.EnrollTotpRequest, context: Context
    ) -> account_pb2.EnrollTotpResponse:
        identity = _session_identity()
        enrollment = await self._service.two_factor.enroll(identity.account_id, request.password)
        return account_pb2.EnrollTotpResponse(
            secret=enrollment.secret,
            otpauth_uri=enrollment.otpauth_uri,
            expire_time=timestamp(enrollment.expire_time),
        )

    async def ConfirmTotp(
        self, request: account_pb2.ConfirmTotpRequest, context: Context
    ) -> account_pb2.ConfirmTotpResponse:
        identity = _session_identity()
        codes, account = await self._service.two_factor.confirm(identity.account_id, request.totp_code)
        return account_pb2.ConfirmTotpResponse(recovery_codes=codes, account=account_message(account))

    async def DisableTotp(
        self, request: account_pb2.DisableTotpRequest, context: Context
    ) -> account_pb2.DisableTotpResponse:
        identity = _session_identity()
        second_factor = _second_factor(request)
        assert second_factor is not None  # the declared rule of second_factor: one is required
        account = await self._service.two_factor.disable(identity.account_id, request.password, second_factor)
        return account_pb2.DisableTotpResponse(account=account_message(account))

    # -- API keys ---------------------------------------------------------------------------------------------------

    async def CreateApiKey(
        self, request: account_pb2.CreateApiKeyRequest, context: Context
    ) -> account_pb2.CreateApiKeyResponse:
        identity = _session_identity()
        key = request.api_key
        expire = naive_utc(key.expire_time) if key.HasField("expire_time") else None
        created, secret = await self._service.api_keys.create(
            identity.account_id,
            name=key.name,
            scopes=list(key.scopes),
            expire_time=expire,
            request_id=request.request_id or None,
        )
        return account_pb2.CreateApiKeyResponse(api_key=api_key_message(created, self._now()), secret=secret)

    async def ListApiKeys(
        self, request: account_pb2.ListApiKeysRequest, context: Context
    ) -> account_pb2.ListApiKeysResponse:
        identity = _session_identity()
        size = page_size(request.page_size)
        query = f"revoked={request.show_revoked}"
        keys, more = await self._service.api_keys.list(
            identity.account_id,
            show_revoked=request.show_revoked,
            after=self._keyset(_API_KEYS_CURSOR, request.page_token, query),
            limit=size,
        )
        now, last = self._now(), keys[-1] if keys else None
        return account_pb2.ListApiKeysResponse(
            api_keys=[api_key_message(key, now) for key in keys],
            next_page_token=(
                self._next_token(_API_KEYS_CURSOR, more, last.create_time, last.api_key_id, query) if last else ""
            ),
        )

    async def RevokeApiKey(
        self, request: account_pb2.RevokeApiKeyRequest, context: Context
    ) -> account_pb2.RevokeApiKeyResponse:
        identity = _session_identity()
        key = await self._service.api_keys.revoke(identity.account_id, request.api_key_id)
        return account_pb2.RevokeApiKeyResponse(api_key=api_key_message(key, self._now()))

    # -- admin ------------------------------------------------------------------------------------------------------

    async def ListUsers(self, request: account_pb2.ListUsersRequest, context: Context) -> account_pb2.ListUsersResponse:
        _admin()
        size = page_size(request.page_size)
        query = f"{request.email_query}|{request.role}|{request.state}"
        position = self._pages.decode(_USERS_CURSOR, request.page_token, query=query)
        after = position["after"] if position else 0
        role = {account_pb2.ROLE_USER: Role.USER, account_pb2.ROLE_ADMIN: Role.ADMIN}.get(request.role)
        users, more = await self._service.list_users(
            after_id=after,
            limit=size,
            email_query=request.email_query.strip(),
            role=role,
            state=AccountState(request.state) if request.state else None,
        )
        token = (
            self._pages.encode(_USERS_CURSOR, {"after": users[-1].account_id}, query=query) if more and users else ""
        )
        return account_pb2.ListUsersResponse(users=[account_message(u) for u in users], next_page_token=token)

    async def DisableUser(
        self, request: account_pb2.DisableUserRequest, context: Context
    ) -> account_pb2.DisableUserResponse:
        admin = _admin()
        account, sessions, keys = await self._service.disable_user(
            admin.account_id, request.account_id, request.reason.strip()
        )
        return account_pb2.DisableUserResponse(
            account=account_message(account), revoked_session_count=sessions, revoked_api_key_count=keys
        )

    async def EnableUser(
        self, request: account_pb2.EnableUserRequest, context: Context
    ) -> account_pb2.EnableUserResponse:
        admin = _admin()
        account = await self._service.enable_user(admin.account_id, request.account_id)
        return account_pb2.EnableUserResponse(account=account_message(account))


def registration(deps: Dependencies, *, clock: Callable[[], datetime] = utc_now) -> ServiceRegistration:
    """The account service, ready to be hosted by a GrpcServer; `deps` are the shared platform dependencies.

    `clock` (naive UTC) is replaceable so tests can move time past token expiries."""
    service = AccountService(build_runtime(deps, clock=clock))
    servicer = AccountServicer(
        service, deps.settings.trusted_proxies, pages=deps.page_tokens, draining=deps.lifecycle.draining
    )
    return ServiceRegistration(
        name="account",
        full_name=SERVICE.full_name,
        add_to_server=lambda server: account_pb2_grpc.add_AccountServiceServicer_to_server(servicer, server),
    )
