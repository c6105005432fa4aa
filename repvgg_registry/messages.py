"""One-line error messages: every error this tool prints is a single line naming problem and fix."""

from __future__ import annotations


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (or its type's name), cut to ``limit`` characters."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
