"""huggingface_hub calls that fail fast, quietly and in one line: for the Hugging Face hub
(``registry.huggingface``) and for the timm weights download (``variants.checkpoints``) alike, so
neither knows about the other.

* a host name that does not resolve, a refused connection or ``HF_HUB_OFFLINE`` fail at once
  (a retry cannot help within seconds);
* 5xx, 429 and timeouts are retried with exponential backoff, and no new try starts once the hub
  has been failing for ``deadline_s`` (``REPVGG_REGISTRY_HF_DEADLINE``, default 40 s);
* every connect, read and write waits at most ``timeout_s`` (``REPVGG_REGISTRY_HF_TIMEOUT``,
  default 20 s), so an endpoint that accepts and never answers cannot hang a command;
* huggingface_hub's own log lines and warnings are silenced for the duration of the call.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from .errors import HubUnreachableError, first_line
from .network import unreachable_reason
from .settings import seconds_from_env

T = TypeVar("T")

# ----- time limits -------------------------------------------------------------------------
TIMEOUT_ENV = "REPVGG_REGISTRY_HF_TIMEOUT"
DEADLINE_ENV = "REPVGG_REGISTRY_HF_DEADLINE"
#: seconds one connect, read or write may wait (the whole of a long, healthy transfer is not bounded)
DEFAULT_TIMEOUT_S = 20.0
#: seconds of failing answers after which no new try starts
DEFAULT_DEADLINE_S = 40.0
NETWORK_FIX = "check the network or HF_ENDPOINT and rerun"

#: loggers that print to the terminal during a failing call unless silenced
_NOISY_LOGGERS = ("httpx2", "httpcore2", "httpx", "httpcore", "urllib3", "filelock")


@dataclass(frozen=True)
class NetworkSettings:
    """How long one socket operation may wait (``timeout_s``) and after how many seconds of
    failures no new try starts (``deadline_s``)."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    deadline_s: float = DEFAULT_DEADLINE_S


def network_settings(timeout_s: float | None = None, deadline_s: float | None = None) -> NetworkSettings:
    """The given limits, else ``REPVGG_REGISTRY_HF_TIMEOUT`` / ``REPVGG_REGISTRY_HF_DEADLINE``, else
    the defaults (20 s and 40 s)."""
    return NetworkSettings(
        seconds_from_env(TIMEOUT_ENV, DEFAULT_TIMEOUT_S, given=timeout_s),
        seconds_from_env(DEADLINE_ENV, DEFAULT_DEADLINE_S, given=deadline_s),
    )


def hf_endpoint(endpoint: str | None = None) -> str:
    """``endpoint``, else ``HF_ENDPOINT`` as it is now (huggingface_hub reads it once, at import), else
    huggingface_hub's default."""
    from huggingface_hub import constants

    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def is_offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()


# ----- the guarded client ------------------------------------------------------------------
class _NoRetry(Exception):  # noqa: N818 - internal signal, never shown
    """Raised from the client instead of an httpx error, so that huggingface_hub's own retry loops
    (which catch httpx errors) let it through at once; :func:`hf_call` turns it into one line."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind  # "unreachable", "timeout" or "deadline"
        self.reason = reason


class _Scope:
    """The limits the guarded client applies while one of our calls runs. One per process, as is
    the client huggingface_hub shares, whose worker threads (uploads) must see it too."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.settings = NetworkSettings()
        self.failing_since: float | None = None  # when the current run of failed requests began

    def failed(self, started: float) -> None:
        with self.lock:
            if self.failing_since is None:
                self.failing_since = started

    def answered(self) -> None:
        with self.lock:
            self.failing_since = None


_SCOPE = _Scope()


def _clamped(timeouts: object, limit: float) -> dict:
    given = timeouts if isinstance(timeouts, dict) else {}
    return {
        key: limit if given.get(key) is None else min(float(given[key]), limit)
        for key in ("connect", "read", "write", "pool")
    }


def _guard(client):
    """Wrap ``client.send`` (through which every request, streamed or not, goes): clamp each
    request's timeouts to ``timeout_s``, start no request once the hub has been failing for
    ``deadline_s``, and raise :class:`_NoRetry` for timeouts and unreachable hosts."""
    import httpx2

    client.timeout = httpx2.Timeout(_SCOPE.settings.timeout_s)
    send = client.send

    def guarded_send(request, **kwargs):
        settings = _SCOPE.settings
        started = time.monotonic()
        since = _SCOPE.failing_since
        if since is not None and started - since >= settings.deadline_s:
            raise _NoRetry("deadline", f"no good answer for {started - since:.0f} s")
        request.extensions = {
            **request.extensions,
            "timeout": _clamped(request.extensions.get("timeout"), settings.timeout_s),
        }
        try:
            response = send(request, **kwargs)
        except httpx2.TimeoutException:
            _SCOPE.failed(started)
            raise _NoRetry("timeout", f"no answer within {settings.timeout_s:g} s") from None
        except httpx2.TransportError as exc:
            _SCOPE.failed(started)
            reason = unreachable_reason(exc)
            if reason is not None:
                raise _NoRetry("unreachable", reason) from None
            raise
        if response.status_code >= 500 or response.status_code == 429:
            _SCOPE.failed(started)
        else:
            _SCOPE.answered()
        return response

    client.send = guarded_send
    return client


@contextmanager
def quiet_hf(settings: NetworkSettings | None = None) -> Iterator[None]:
    """For the duration: huggingface_hub's client is guarded (see :func:`_guard`) and its log lines,
    httpx's and Python warnings are silenced. Re-entrant: an inner scope keeps the outer's limits."""
    with _SCOPE.lock:
        _SCOPE.depth += 1
        outer = _SCOPE.depth == 1
    if not outer:
        try:
            yield
        finally:
            with _SCOPE.lock:
                _SCOPE.depth -= 1
        return

    from huggingface_hub.utils import _http as hf_http
    from huggingface_hub.utils import logging as hf_logging
    from huggingface_hub.utils import set_client_factory

    # huggingface_hub offers set_client_factory but no getter: read the factory it holds, to put it back
    previous = getattr(hf_http, "_GLOBAL_CLIENT_FACTORY", hf_http.default_client_factory)
    verbosity = hf_logging.get_verbosity()
    levels = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    _SCOPE.settings = settings or network_settings()
    _SCOPE.failing_since = None
    try:
        hf_logging.set_verbosity(logging.CRITICAL + 1)
        for name in levels:
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)
        set_client_factory(lambda: _guard(previous()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        set_client_factory(previous)
        hf_logging.set_verbosity(verbosity)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        with _SCOPE.lock:
            _SCOPE.depth -= 1


def _classify(exc: BaseException, settings: NetworkSettings) -> tuple[str | None, str]:
    """``("retry" | "final" | "offline" | None, reason)`` for an error of one try; None: not a
    network error, the caller's to handle."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    if isinstance(exc, _NoRetry):
        return ("retry" if exc.kind == "timeout" else "final"), exc.reason
    if isinstance(exc, OfflineModeIsEnabled):
        return "offline", "HF_HUB_OFFLINE is set"
    if isinstance(exc, HfHubHTTPError):
        status = getattr(exc.response, "status_code", None)
        if status is not None and (status >= 500 or status == 429):
            return "retry", f"HTTP {status}"
        return None, ""
    if isinstance(exc, LocalEntryNotFoundError) and isinstance(exc.__cause__, Exception):
        # hf_hub_download hides why its look-up failed behind "not in the local cache"
        kind, reason = _classify(exc.__cause__, settings)
        return (kind, reason) if kind else (None, "")
    if isinstance(exc, httpx2.TimeoutException):
        return "retry", f"no answer within {settings.timeout_s:g} s"
    if isinstance(exc, httpx2.TransportError):
        reason = unreachable_reason(exc)
        return ("final", reason) if reason else ("retry", first_line(exc))
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return "retry", first_line(exc)
    return None, ""


def offline_message(what: str, endpoint: str) -> str:
    return (
        f"HF_HUB_OFFLINE is set, so {what} cannot reach the Hugging Face Hub at {endpoint}; "
        "unset HF_HUB_OFFLINE (or use a local --hub folder) and rerun"
    )


def hf_call(
    what: str,
    fn: Callable[[], T],
    *,
    endpoint: str | None = None,
    retries: int = 4,
    backoff_s: float = 1.0,
    settings: NetworkSettings | None = None,
    fix: str = NETWORK_FIX,
    error: Callable[[str], Exception] = HubUnreachableError,
) -> T:
    """Run one huggingface_hub call quietly (:func:`quiet_hf`). A host that does not resolve, a
    refused connection and ``HF_HUB_OFFLINE`` raise ``error`` at once; 5xx, 429, timeouts and other
    network errors are retried up to ``retries`` times with exponential backoff from ``backoff_s``,
    and not once the tries have taken ``deadline_s``. Other errors (4xx...) propagate unchanged.
    ``error`` (HubUnreachableError by default) carries one line: ``"Hugging Face Hub at <endpoint>
    did not answer <what> ...; <fix>"``."""
    endpoint = hf_endpoint(endpoint)
    settings = settings or network_settings()
    with quiet_hf(settings):
        if is_offline():
            raise error(offline_message(what, endpoint))
        started = time.monotonic()
        delay = backoff_s
        tries = 0
        while True:
            tries += 1
            _SCOPE.answered()  # a new try starts with a clean record
            try:
                return fn()
            except Exception as exc:
                kind, reason = _classify(exc, settings)
                if kind is None:
                    raise
                if kind == "offline":
                    raise error(offline_message(what, endpoint)) from None
                if kind == "final":
                    raise error(f"Hugging Face Hub at {endpoint} did not answer {what}: {reason}; {fix}") from None
            elapsed = time.monotonic() - started
            if tries > retries or elapsed + delay >= settings.deadline_s:
                raise error(
                    f"Hugging Face Hub at {endpoint} did not answer {what} after {tries} "
                    f"{'try' if tries == 1 else 'tries'} in {elapsed:.0f} s (the last: {reason}); {fix}"
                ) from None
            time.sleep(delay)
            delay *= 2
