"""gRPC adapter of the account domain: decodes requests, calls the account service, encodes responses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from bullant.account.v1 import account_pb2, account_pb2_grpc
from services.account.callers import admin_caller, session_caller
from services.account.client import client_info, parse_networks
from services.account.encoding import (
    account_message,
    api_key_message,
    credential_fields,
    profile_from_message,
    profile_message,
    role_from_message,
    second_factor_from_message,
    session_message,
    token_fields,
)
from services.account.records import AccountState
from services.account.service import AccountService, Registration
from services.core.auth.identity import require_identity
from services.core.errors import Unavailable
from services.core.timestamps import naive_utc, timestamp

SERVICE = account_pb2.DESCRIPTOR.services_by_name["AccountService"]
Context = grpc.aio.ServicerContext[Any, Any]


class AccountServicer(account_pb2_grpc.AccountServiceServicer):
    """bullant.account.v1.AccountService."""

    def __init__(
        self,
        service: AccountService,
        trusted_proxies: list[str],
        *,
        draining: asyncio.Event | None = None,
    ) -> None:
        self._service = service
        self._trusted = parse_networks(trusted_proxies)
        # Set when the server shuts down: WatchCredential streams end then.
        self._draining = draining or asyncio.Event()

    # -- registration, verification, passwords ---------------------------------------------------------------------

    async def Register(self, request: account_pb2.RegisterRequest, context: Context) -> account_pb2.RegisterResponse:
        details = Registration(
            display_name=request.display_name,
            timezone=request.timezone,
            locale=request.locale,
            request_id=request.request_id,
            ip_address=client_info(context, self._trusted).ip_address,
        )
        account = await self._service.register(request.email, request.password, details)
        return account_pb2.RegisterResponse(account=account_message(account))

    async def VerifyEmail(
        self, request: account_pb2.VerifyEmailRequest, context: Context
    ) -> account_pb2.VerifyEmailResponse:
        account = await self._service.verify_email(request.token)
        return account_pb2.VerifyEmailResponse(account=account_message(account))

    async def ResendVerificationEmail(
        self, request: account_pb2.ResendVerificationEmailRequest, context: Context
    ) -> account_pb2.ResendVerificationEmailResponse:
        identity = session_caller()
        expire = await self._service.resend_verification(identity.account_id)
        return account_pb2.ResendVerificationEmailResponse(expire_time=timestamp(expire))

    async def RequestPasswordReset(
        self, request: account_pb2.RequestPasswordResetRequest, context: Context
    ) -> account_pb2.RequestPasswordResetResponse:
        await self._service.request_password_reset(request.email, client_info(context, self._trusted).ip_address)
        return account_pb2.RequestPasswordResetResponse()

    async def ResetPassword(
        self, request: account_pb2.ResetPasswordRequest, context: Context
    ) -> account_pb2.ResetPasswordResponse:
        await self._service.reset_password(request.token, request.new_password)
        return account_pb2.ResetPasswordResponse()

    async def ChangePassword(
        self, request: account_pb2.ChangePasswordRequest, context: Context
    ) -> account_pb2.ChangePasswordResponse:
        identity = session_caller()
        revoked = await self._service.change_password(
            identity.account_id, identity.session_id or "", request.current_password, request.new_password
        )
        return account_pb2.ChangePasswordResponse(revoked_session_count=revoked)

    # -- sessions ---------------------------------------------------------------------------------------------------

    async def Login(self, request: account_pb2.LoginRequest, context: Context) -> account_pb2.LoginResponse:
        client = client_info(context, self._trusted, device_name=request.device_name, user_agent=request.user_agent)
        pair = await self._service.sessions.login(
            request.email, request.password, second_factor_from_message(request), client
        )
        return account_pb2.LoginResponse(**token_fields(pair))

    async def Refresh(self, request: account_pb2.RefreshRequest, context: Context) -> account_pb2.RefreshResponse:
        pair = await self._service.sessions.refresh(request.refresh_token, client_info(context, self._trusted))
        return account_pb2.RefreshResponse(**token_fields(pair))

    async def Logout(self, request: account_pb2.LogoutRequest, context: Context) -> account_pb2.LogoutResponse:
        identity = session_caller()
        revoked = await self._service.sessions.logout(
            identity.account_id, identity.session_id or "", all_sessions=request.all_sessions
        )
        return account_pb2.LogoutResponse(revoked_session_count=revoked)

    async def ListSessions(
        self, request: account_pb2.ListSessionsRequest, context: Context
    ) -> account_pb2.ListSessionsResponse:
        identity = session_caller()
        page = await self._service.sessions.list(
            identity.account_id, size=request.page_size, page_token=request.page_token
        )
        return account_pb2.ListSessionsResponse(
            sessions=[session_message(s, identity.session_id) for s in page.items],
            next_page_token=page.next_page_token,
        )

    async def RevokeSession(
        self, request: account_pb2.RevokeSessionRequest, context: Context
    ) -> account_pb2.RevokeSessionResponse:
        identity = session_caller()
        await self._service.sessions.revoke(identity.account_id, request.session_id)
        return account_pb2.RevokeSessionResponse()

    # -- account and profile ----------------------------------------------------------------------------------------

    async def GetAccount(
        self, request: account_pb2.GetAccountRequest, context: Context
    ) -> account_pb2.GetAccountResponse:
        identity = require_identity()
        account = await self._service.account(identity.account_id)
        return account_pb2.GetAccountResponse(account=account_message(account), **credential_fields(identity))

    async def WatchCredential(
        self, request: account_pb2.WatchCredentialRequest, context: Context
    ) -> AsyncIterator[account_pb2.WatchCredentialResponse]:
        identity = require_identity()
        reply = account_pb2.WatchCredentialResponse(account_id=identity.account_id, **credential_fields(identity))
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
        return account_pb2.GetProfileResponse(profile=profile_message(await self._service.profile(identity.ref)))

    async def UpdateProfile(
        self, request: account_pb2.UpdateProfileRequest, context: Context
    ) -> account_pb2.UpdateProfileResponse:
        identity = require_identity()
        paths = list(request.update_mask.paths)
        profile = await self._service.update_profile(identity.ref, profile_from_message(request.profile), paths)
        return account_pb2.UpdateProfileResponse(profile=profile_message(profile))

    # -- TOTP -------------------------------------------------------------------------------------------------------

    async def EnrollTotp(
        self, request: account_pb2.EnrollTotpRequest, context: Context
    ) -> account_pb2.EnrollTotpResponse:
        identity = session_caller()
        enrollment = await self._service.two_factor.enroll(identity.account_id, request.password)
        return account_pb2.EnrollTotpResponse(
            secret=enrollment.secret,
            otpauth_uri=enrollment.otpauth_uri,
            expire_time=timestamp(enrollment.expire_time),
        )

    async def ConfirmTotp(
        self, request: account_pb2.ConfirmTotpRequest, context: Context
    ) -> account_pb2.ConfirmTotpResponse:
        identity = session_caller()
        codes, account = await self._service.two_factor.confirm(identity.account_id, request.totp_code)
        return account_pb2.ConfirmTotpResponse(recovery_codes=codes, account=account_message(account))

    async def DisableTotp(
        self, request: account_pb2.DisableTotpRequest, context: Context
    ) -> account_pb2.DisableTotpResponse:
        identity = session_caller()
        second_factor = second_factor_from_message(request)
        assert second_factor is not None  # the declared rule of second_factor: one is required
        account = await self._service.two_factor.disable(identity.account_id, request.password, second_factor)
        return account_pb2.DisableTotpResponse(account=account_message(account))

    # -- API keys ---------------------------------------------------------------------------------------------------

    async def CreateApiKey(
        self, request: account_pb2.CreateApiKeyRequest, context: Context
    ) -> account_pb2.CreateApiKeyResponse:
        identity = session_caller()
        key = request.api_key
        expire = naive_utc(key.expire_time) if key.HasField("expire_time") else None
        created, secret = await self._service.api_keys.create(
            identity.account_id,
            name=key.name,
            scopes=list(key.scopes),
            expire_time=expire,
            request_id=request.request_id or None,
        )
        return account_pb2.CreateApiKeyResponse(api_key=api_key_message(created, self._service.now()), secret=secret)

    async def ListApiKeys(
        self, request: account_pb2.ListApiKeysRequest, context: Context
    ) -> account_pb2.ListApiKeysResponse:
        identity = session_caller()
        page = await self._service.api_keys.list(
            identity.account_id,
            show_revoked=request.show_revoked,
            size=request.page_size,
            page_token=request.page_token,
        )
        now = self._service.now()
        return account_pb2.ListApiKeysResponse(
            api_keys=[api_key_message(key, now) for key in page.items], next_page_token=page.next_page_token
        )

    async def RevokeApiKey(
        self, request: account_pb2.RevokeApiKeyRequest, context: Context
    ) -> account_pb2.RevokeApiKeyResponse:
        identity = session_caller()
        key = await self._service.api_keys.revoke(identity.account_id, request.api_key_id)
        return account_pb2.RevokeApiKeyResponse(api_key=api_key_message(key, self._service.now()))

    # -- admin ------------------------------------------------------------------------------------------------------

    async def ListUsers(self, request: account_pb2.ListUsersRequest, context: Context) -> account_pb2.ListUsersResponse:
        admin_caller()
        page = await self._service.list_users(
            email_query=request.email_query,
            role=role_from_message(request.role),
            state=AccountState(request.state) if request.state else None,
            size=request.page_size,
            page_token=request.page_token,
        )
        return account_pb2.ListUsersResponse(
            users=[account_message(u) for u in page.items], next_page_token=page.next_page_token
        )

    async def DisableUser(
        self, request: account_pb2.DisableUserRequest, context: Context
    ) -> account_pb2.DisableUserResponse:
        admin = admin_caller()
        account, sessions, keys = await self._service.disable_user(admin.account_id, request.account_id, request.reason)
        return account_pb2.DisableUserResponse(
            account=account_message(account), revoked_session_count=sessions, revoked_api_key_count=keys
        )

    async def EnableUser(
        self, request: account_pb2.EnableUserRequest, context: Context
    ) -> account_pb2.EnableUserResponse:
        admin = admin_caller()
        account = await self._service.enable_user(admin.account_id, request.account_id)
        return account_pb2.EnableUserResponse(account=account_message(account))
