"""Conversions between the account domain's records and bullant.account.v1 messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bullant.account.v1 import account_pb2
from services.account.factors import SecondFactor
from services.account.profile import (
    EmailChannel,
    InAppChannel,
    NotificationPreferences,
    Profile,
    RiskProfile,
    SmsChannel,
    TelegramChannel,
    WebhookChannel,
)
from services.account.records import Account, ApiKey, ApiKeyState, Role, Session, TokenPair
from services.core.auth.identity import Credential, Identity
from services.core.timestamps import timestamp

_ROLES = {Role.USER.value: account_pb2.ROLE_USER, Role.ADMIN.value: account_pb2.ROLE_ADMIN}


def account_message(account: Account) -> account_pb2.Account:
    return account_pb2.Account(
        account_id=account.account_id,
        email=account.email,
        email_verified=account.email_verified,
        roles=[_ROLES[role] for role in account.roles if role in _ROLES],
        state=int(account.state),  # type: ignore[arg-type]
        totp_enabled=account.totp_enabled,
        create_time=timestamp(account.create_time),
        verify_time=timestamp(account.verify_time),
        last_login_time=timestamp(account.last_login_time),
        disable_time=timestamp(account.disable_time),
        disable_reason=account.disable_reason,
    )


def session_message(session: Session, current_session_id: str | None) -> account_pb2.Session:
    return account_pb2.Session(
        session_id=session.session_id,
        device_name=session.device_name,
        user_agent=session.user_agent,
        ip_address=session.ip_address,
        create_time=timestamp(session.create_time),
        last_use_time=timestamp(session.last_use_time),
        expire_time=timestamp(session.expire_time),
        current=session.session_id == current_session_id,
    )


def api_key_message(key: ApiKey, now: datetime) -> account_pb2.ApiKey:
    state = {
        ApiKeyState.ACTIVE: account_pb2.API_KEY_STATE_ACTIVE,
        ApiKeyState.EXPIRED: account_pb2.API_KEY_STATE_EXPIRED,
        ApiKeyState.REVOKED: account_pb2.API_KEY_STATE_REVOKED,
    }[key.state(now)]
    return account_pb2.ApiKey(
        api_key_id=key.api_key_id,
        name=key.name,
        scopes=list(key.scopes),
        prefix=key.prefix,
        expire_time=timestamp(key.expire_time),
        create_time=timestamp(key.create_time),
        last_use_time=timestamp(key.last_use_time),
        revoke_time=timestamp(key.revoke_time),
        state=state,
    )


def profile_message(profile: Profile) -> account_pb2.Profile:
    channels = profile.notification_preferences
    return account_pb2.Profile(
        display_name=profile.display_name,
        timezone=profile.timezone,
        locale=profile.locale,
        notification_preferences=account_pb2.NotificationPreferences(
            email=account_pb2.EmailChannel(enabled=channels.email.enabled, address=channels.email.address),
            webhook=account_pb2.WebhookChannel(enabled=channels.webhook.enabled, url=channels.webhook.url),
            telegram=account_pb2.TelegramChannel(enabled=channels.telegram.enabled, chat_id=channels.telegram.chat_id),
            sms=account_pb2.SmsChannel(enabled=channels.sms.enabled, phone_number=channels.sms.phone_number),
            in_app=account_pb2.InAppChannel(enabled=channels.in_app.enabled),
        ),
        risk_profile=int(profile.risk_profile),  # type: ignore[arg-type]
        update_time=timestamp(profile.update_time),
    )


def profile_from_message(message: account_pb2.Profile) -> Profile:
    """The domain profile a request carries (every field, set or not: the update mask says which count)."""
    channels = message.notification_preferences
    risk = message.risk_profile
    return Profile(
        display_name=message.display_name,
        timezone=message.timezone,
        locale=message.locale,
        notification_preferences=NotificationPreferences(
            email=EmailChannel(enabled=channels.email.enabled, address=channels.email.address),
            webhook=WebhookChannel(enabled=channels.webhook.enabled, url=channels.webhook.url),
            telegram=TelegramChannel(enabled=channels.telegram.enabled, chat_id=channels.telegram.chat_id),
            sms=SmsChannel(enabled=channels.sms.enabled, phone_number=channels.sms.phone_number),
            in_app=InAppChannel(enabled=channels.in_app.enabled),
        ),
        # An unknown enum number from a newer client is kept as-is for validate_profile to refuse.
        risk_profile=RiskProfile(risk) if risk in RiskProfile._value2member_map_ else risk,  # type: ignore[arg-type]
    )


def second_factor_from_message(message: Any) -> SecondFactor | None:
    which = message.WhichOneof("second_factor")
    if which is None:
        return None
    value = getattr(message, which)
    return SecondFactor(totp_code=value) if which == "totp_code" else SecondFactor(recovery_code=value)


def token_fields(pair: TokenPair) -> dict[str, Any]:
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


def role_from_message(role: int) -> Role | None:
    """A role filter's domain value; None for ROLE_UNSPECIFIED (no filter)."""
    roles: dict[int, Role] = {account_pb2.ROLE_USER: Role.USER, account_pb2.ROLE_ADMIN: Role.ADMIN}
    return roles.get(role)


def credential_fields(identity: Identity) -> dict[str, Any]:
    """What GetAccountResponse and WatchCredentialResponse say about the caller's credential."""
    api_key = identity.credential is Credential.API_KEY
    return {
        "scopes": list(identity.scopes),
        "session_id": "" if api_key else identity.session_id or "",
        "api_key_id": identity.credential_id if api_key else "",
    }
