"""The links the platform mails to people (BULLANT_PUBLIC_URL + path + `?token=`): the account service writes them
and the gateway serves the pages behind them (gateway/pages.py), so both read the paths from here."""

from __future__ import annotations

VERIFY_EMAIL_PATH = "verify-email"
RESET_PASSWORD_PATH = "reset-password"  # noqa: S105 - a path, not a secret
