"""The account domain's lifetimes and limits, and its brute-force guards."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from services.account.throttle import Throttle


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountPolicy:
    """Lifetimes and limits of the account domain."""

    access_token_ttl: timedelta = timedelta(minutes=15)
    refresh_token_ttl: timedelta = timedelta(days=30)
    # Clock difference tolerated by verifiers; revocations outlive the last token they kill by this much.
    token_leeway: timedelta = timedelta(seconds=5)
    verification_token_ttl: timedelta = timedelta(hours=48)
    reset_token_ttl: timedelta = timedelta(hours=1)
    pending_totp_ttl: timedelta = timedelta(minutes=15)
    api_key_default_ttl: timedelta = timedelta(days=90)
    api_key_max_ttl: timedelta = timedelta(days=365)
    max_active_api_keys: int = 25
    verification_emails_per_hour: int = 3
    # Where links in emails point (the web app).
    public_url: str = "http://localhost:8080"
    # Write email links to the log too (the embedded default has no mail server).
    log_email_links: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Throttles:
    """Brute-force guards per kind of attempt."""

    login: Throttle
    password_reset: Throttle
    registration: Throttle
    verification_email: Throttle
