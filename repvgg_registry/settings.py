"""Settings read from the environment: one parser, so every variable of ours fails the same way."""

from __future__ import annotations

import math
import os

from .errors import UsageError


def seconds_from_env(name: str, default: float, *, given: float | None = None, allow_inf: bool = False) -> float:
    """``given``, else ``$name`` as a number of seconds (> 0; ``inf`` only with ``allow_inf``),
    else ``default``. A bad value is a one-line :class:`UsageError` naming the variable."""
    rule = "use a number of seconds greater than 0" + (" (or inf to wait forever)" if allow_inf else "")
    value: object = given
    if value is None:
        text = os.environ.get(name, "").strip()
        if not text:
            return default
        try:
            value = float(text)
        except ValueError:
            raise UsageError(name, text, rule) from None
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    if not ok or not (math.isfinite(value) or allow_inf) or math.isnan(value):
        raise UsageError(name, value, rule)
    return float(value)
