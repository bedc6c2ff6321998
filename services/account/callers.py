"""Who may call an account method beyond its declared access rule: a signed-in session (not an API key), or an
admin."""

from __future__ import annotations

from services.core.auth.identity import Credential, Identity, require_identity
from services.core.errors import PermissionDenied


def session_caller() -> Identity:
    """The caller, PERMISSION_DENIED SESSION_REQUIRED unless it signed in (methods that change credentials)."""
    identity = require_identity()
    if identity.credential is not Credential.SESSION or identity.session_id is None:
        raise PermissionDenied("this method needs a signed-in session, not an API key", reason="SESSION_REQUIRED")
    return identity


def admin_caller() -> Identity:
    """The caller, PERMISSION_DENIED ROLE_MISSING unless it is an admin."""
    identity = require_identity()
    if not identity.is_admin:
        raise PermissionDenied("this method is for admins", reason="ROLE_MISSING")
    return identity
