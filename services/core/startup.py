"""Errors that stop a process from starting; the `bullant` command prints their message and exits 1."""

from __future__ import annotations


class StartupError(Exception):
    """The process cannot start as configured; the message says what to do about it."""
