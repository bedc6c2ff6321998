"""TOTP two-factor authentication: enrolment, confirmation with recovery codes, checks at login, and turning it off."""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyotp

from services.account.accounts import Accounts
from services.account.credential_store import CredentialStore
from services.account.credentials import hash_recovery_code, new_recovery_codes, new_salt
from services.account.records import Account, TotpCredential
from services.core.clock import WallClock
from services.core.errors import FailedPrecondition, PermissionDenied, Unauthenticated, Unavailable
from services.core.sealing import Sealer, SealError

log = logging.getLogger("bullant.account")

ISSUER = "Bullant"
PERIOD_SECONDS = 30
# Codes from the previous and next 30-second step are accepted: phones' clocks drift.
DRIFT_STEPS = 1


@dataclass(frozen=True, slots=True)
class SecondFactor:
    """What the user typed as a second factor: a TOTP code or a recovery code."""

    totp_code: str = ""
    recovery_code: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Enrollment:
    """A pending TOTP secret to show the user."""

    secret: str
    otpauth_uri: str
    expire_time: datetime


def _step(moment: datetime) -> int:
    return int(moment.replace(tzinfo=UTC).timestamp()) // PERIOD_SECONDS


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step within the drift window whose code is `code`, None when none matches."""
    if not (len(code) == 6 and code.isascii() and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret)
    current = _step(now)
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


class TwoFactor:
    """EnrollTotp, ConfirmTotp, DisableTotp and the second-factor check of Login."""

    def __init__(
        self,
        *,
        accounts: Accounts,
        credentials: CredentialStore,
        sealer: Sealer,
        pending_ttl: timedelta,
        clock: WallClock,
    ) -> None:
        self._accounts = accounts
        self._credentials = credentials
        # Encrypts the TOTP secrets kept in the database.
        self._sealer = sealer
        self._pending_ttl = pending_ttl
        self._clock = clock

    async def enroll(self, account_id: int, password: str) -> Enrollment:
        account = await self._accounts.check_password(account_id, password)
        if account.totp_enabled:
            raise FailedPrecondition("TOTP is already enabled", reason="TOTP_ALREADY_ENABLED")
        secret = pyotp.random_base32()
        now = self._clock()
        expire_time = now + self._pending_ttl
        sealed = self._sealer.seal(secret, context=_context(account_id))
        if not await self._credentials.put_pending_totp(account_id, sealed, now=now, expire_time=expire_time):
            raise FailedPrecondition("TOTP is already enabled", reason="TOTP_ALREADY_ENABLED")
        uri = pyotp.TOTP(secret).provisioning_uri(name=account.email, issuer_name=ISSUER)
        return Enrollment(secret=secret, otpauth_uri=uri, expire_time=expire_time)

    async def confirm(self, account_id: int, code: str) -> tuple[list[str], Account]:
        """Activate the pending secret; the recovery codes (shown once) and the account."""
        credential = await self._credentials.totp(account_id)
        now = self._clock()
        if credential is not None and credential.active:
            raise FailedPrecondition("TOTP is already enabled", reason="TOTP_ALREADY_ENABLED")
        if credential is None or (credential.expire_time is not None and credential.expire_time <= now):
            raise FailedPrecondition("no pending TOTP enrolment: call EnrollTotp", reason="TOTP_NOT_ENROLLED")
        step = matching_step(self._secret(credential), code, now)
        if step is None:
            raise PermissionDenied("wrong TOTP code", reason="TOTP_INVALID")
        codes = new_recovery_codes()
        salt = new_salt()
        activated = await self._credentials.activate_totp(
            account_id,
            sealed_secret=credential.sealed_secret,
            step=step,
            salt=salt,
            code_hashes=[hash_recovery_code(code, salt) for code in codes],
        )
        if not activated:
            raise FailedPrecondition("the pending enrolment changed: call EnrollTotp again", reason="TOTP_NOT_ENROLLED")
        log.info("totp enabled", extra={"account_id": account_id})
        return codes, await self._accounts.account(account_id)

    async def disable(self, account_id: int, password: str, second_factor: SecondFactor) -> Account:
        account = await self._accounts.check_password(account_id, password)
        if not account.totp_enabled:
            raise FailedPrecondition("TOTP is not enabled", reason="TOTP_NOT_ENABLED")
        await self.check(account_id, second_factor, login=False)
        await self._credentials.delete_totp(account_id)
        log.info("totp disabled", extra={"account_id": account_id})
        return await self._accounts.account(account_id)

    async def check(self, account_id: int, second_factor: SecondFactor | None, *, login: bool) -> None:
        """Accept a current unused TOTP code or an unused recovery code (spending it). At login a failure is
        UNAUTHENTICATED (the caller is not signed in yet); elsewhere PERMISSION_DENIED."""
        error = Unauthenticated if login else PermissionDenied
        if second_factor is None or not (second_factor.totp_code or second_factor.recovery_code):
            raise error("a TOTP code or a recovery code is required", reason="TOTP_REQUIRED")
        credential = await self._credentials.totp(account_id)
        if credential is None or not credential.active:
            raise error("TOTP is not enabled", reason="TOTP_NOT_ENABLED")
        now = self._clock()
        if second_factor.totp_code:
            step = matching_step(self._secret(credential), second_factor.totp_code, now)
            # accept_step makes each code single-use: a code seen by a shoulder-surfer is already spent.
            if (
                step is None
                or step <= credential.last_step
                or not await self._credentials.accept_step(account_id, step)
            ):
                raise error("wrong or already used TOTP code", reason="TOTP_INVALID")
            return
        code_hash = hash_recovery_code(second_factor.recovery_code, credential.recovery_salt)
        if not await self._credentials.use_recovery_code(account_id, code_hash, now):
            raise error("wrong or already used recovery code", reason="RECOVERY_CODE_INVALID")
        log.info("recovery code used", extra={"account_id": account_id})

    def _secret(self, credential: TotpCredential) -> str:
        try:
            return self._sealer.open(credential.sealed_secret, context=_context(credential.account_id))
        except SealError:
            # Wrong BULLANT_DATA_KEY_FILE: nobody could pass this factor; say so to the operator, not the user.
            log.error("cannot open the TOTP secret: is BULLANT_DATA_KEY_FILE the key it was sealed with?")
            raise Unavailable("two-factor authentication is unavailable; try again later") from None


def _context(account_id: int) -> str:
    return f"totp:{account_id}"
