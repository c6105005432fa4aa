"""What a failed connection says about the network, for every hub client (Hugging Face, Kaggle)."""

from __future__ import annotations

import errno
import socket

from .errors import first_line


def unreachable_reason(exc: BaseException) -> str | None:
    """Why a connect failed, if it is a failure that a retry cannot mend within seconds: a host name
    that does not resolve, a refused connection, no route to the network."""
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, socket.gaierror):
            return f"the host name does not resolve ({first_line(current)})"
        if isinstance(current, ConnectionRefusedError):
            return f"the connection was refused ({first_line(current)})"
        if isinstance(current, OSError) and current.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return f"the network is unreachable ({first_line(current)})"
        current = current.__cause__ or current.__context__
    return None
