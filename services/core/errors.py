"""Typed domain errors: what a domain raises, independent of gRPC (mapped to status codes in grpc_errors)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request: its path (`alert.symbol`, `bars[3].high`) and what is wrong with it."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error a domain raises on purpose.

    `reason` is an UPPER_SNAKE identifier clients can branch on (ErrorInfo.reason); `metadata` carries the values
    that explain this occurrence (ErrorInfo.metadata); `message` is for humans. `detail` is for operators only (which
    server, which command, the driver's words): it is logged, and `str(error)` includes it, but it never reaches a
    client.
    """

    default_reason: ClassVar[str] = "ERROR"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, object] | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(f"{message} ({detail})" if detail else message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = {str(k): str(v) for k, v in (metadata or {}).items()}
        self.detail = detail

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, reason={self.reason!r})"


class InvalidArgument(DomainError):
    """The request is malformed; `violations` says which fields and why."""

    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        violations: Iterable[FieldViolation] | FieldViolation,
        message: str | None = None,
        *,
        reason: str | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> None:
        items = [violations] if isinstance(violations, FieldViolation) else list(violations)
        if not items:
            raise ValueError("InvalidArgument needs at least one field violation")
        self.violations: tuple[FieldViolation, ...] = tuple(items)
        summary = "; ".join(f"{v.field}: {v.description}" for v in items)
        super().__init__(message or f"invalid request: {summary}", reason=reason, metadata=metadata)

    @classmethod
    def field(cls, field: str, description: str, *, reason: str | None = None) -> InvalidArgument:
        """Shorthand for a single bad field."""
        return cls(FieldViolation(field, description), reason=reason)


class NotFound(DomainError):
    """The thing asked for does not exist (or the caller may not know that it does)."""

    default_reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    """Creating something that exists already."""

    default_reason = "ALREADY_EXISTS"


class PermissionDenied(DomainError):
    """The caller is known but may not do this."""

    default_reason = "PERMISSION_DENIED"


class Unauthenticated(DomainError):
    """The caller's credentials are missing, invalid or expired."""

    default_reason = "UNAUTHENTICATED"


class FailedPrecondition(DomainError):
    """The system is not in a state that allows this (e.g. no trained model yet)."""

    default_reason = "FAILED_PRECONDITION"


class ResourceExhausted(DomainError):
    """A quota or rate limit is spent; `retry_after_seconds` says when to try again."""

    default_reason = "RESOURCE_EXHAUSTED"

    def __init__(
        self,
        message: str,
        *,
        retry_after_seconds: float | None = None,
        reason: str | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after_seconds = retry_after_seconds


class Unavailable(DomainError):
    """A dependency is down for now; the call may succeed if retried later (`retry_after_seconds`: when)."""

    default_reason = "UNAVAILABLE"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, object] | None = None,
        detail: str = "",
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata, detail=detail)
        self.retry_after_seconds = retry_after_seconds


class Aborted(DomainError):
    """A concurrency conflict (optimistic lock, lost lease); retry the whole operation."""

    default_reason = "ABORTED"


class DeadlineExceeded(DomainError):
    """The work could not finish within the caller's deadline."""

    default_reason = "DEADLINE_EXCEEDED"
