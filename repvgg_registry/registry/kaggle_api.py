"""kagglehub and kagglesdk calls that fail fast, quietly and in one line, for :mod:`.kaggle`.

What the client does on its own, and what this module changes:

* kagglesdk prints every request and response to stdout in test mode, and kagglehub logs each file
  and draws tqdm bars while it uploads: every call runs with stdout and stderr captured and
  kagglehub's loggers at ERROR, so nothing of it (a token in a header included) reaches a terminal.
* a refused connection or a host name that does not resolve fails at once: a retry cannot help
  within seconds, and kagglehub's own upload loop would sleep 1 + 2 + 4 + 8 + 16 s before saying so;
* 5xx, 429 and timeouts are retried with exponential backoff from ``backoff_s``, and no new try
  starts once ``deadline_s`` (``REPVGG_REGISTRY_KAGGLE_DEADLINE``, default 40 s) has passed, so a
  failing Kaggle costs well under a minute;
* 401 and 403 are one-line errors that name the fix; the token is never part of a message.

kagglehub reads its configuration (``KAGGLE_API_TOKEN``, ``KAGGLE_API_ENVIRONMENT``...) at call time,
so each call sees the environment as it is then.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from ..errors import HubError, HubUnreachableError, MissingExtraError, MissingTokenError, UsageError, first_line
from ..network import unreachable_reason
from ..settings import seconds_from_env

T = TypeVar("T")

KAGGLE_EXTRA = "pip install 'repvgg-registry[kaggle]'"
DEADLINE_ENV = "REPVGG_REGISTRY_KAGGLE_DEADLINE"
DEFAULT_DEADLINE_S = 40.0
NETWORK_FIX = "check the network (and KAGGLE_API_ENVIRONMENT) and rerun"
CREDENTIALS_FIX = (
    "set KAGGLE_API_TOKEN (a token from kaggle.com/settings) or run kagglehub.login(), which writes "
    "~/.kaggle/access_token, then rerun"
)
_NOISY_LOGGERS = ("kagglehub", "kagglesdk", "urllib3", "requests")
_STATUS_IN_TEXT = re.compile(r"status code (\d{3})")


def require_kagglehub() -> None:
    """The ``kaggle`` extra is installed, else one line naming it (before anything is built)."""
    try:
        import kagglehub  # noqa: F401
    except ImportError:
        raise MissingExtraError(
            "kaggle", f"kaggle:// hubs need the official kagglehub client: {KAGGLE_EXTRA}"
        ) from None


def has_credentials() -> bool:
    """Whether kagglehub finds credentials where it looks (``KAGGLE_API_TOKEN``, ``~/.kaggle/access_token``,
    ``KAGGLE_USERNAME``/``KAGGLE_KEY``, ``kaggle.json``); a malformed ``kaggle.json`` is one line."""
    from kagglehub.config import get_kaggle_credentials

    try:
        with quiet():
            return get_kaggle_credentials() is not None
    except ValueError as exc:  # kagglehub's own message names the file and the missing key
        raise MissingTokenError(f"{first_line(exc)}; fix it or {CREDENTIALS_FIX}") from None


def _env():
    from kagglesdk.kaggle_env import get_env

    try:
        return get_env()
    except Exception as exc:  # kagglesdk raises a bare Exception for an unknown value
        raise UsageError(
            "KAGGLE_API_ENVIRONMENT", os.environ.get("KAGGLE_API_ENVIRONMENT"), "unset it (or use PROD or TEST)"
        ) from exc


def endpoint() -> str:
    """Where kagglehub sends its calls now (``KAGGLE_API_ENVIRONMENT`` honoured)."""
    from kagglesdk.kaggle_env import get_endpoint

    return get_endpoint(_env()).rstrip("/")


def web_url() -> str:
    """The base of the model pages kagglehub links to (``https://kaggle.com`` outside test mode)."""
    from kagglesdk.kaggle_env import get_web_endpoint

    return get_web_endpoint(_env()).rstrip("/")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Capture stdout and stderr and keep the client's loggers at ERROR for the duration."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def upload_retries_within(deadline_s: float) -> int:
    """How many retries kagglehub's resumable upload may make so that a network gone mid-upload
    fails within ``deadline_s``: each retry sleeps 1, 2, 4, ... s and is followed by a probe of the
    upload that retries the same way, so ``r`` retries cost about ``(r + 1) * (2**r - 1)`` s."""
    retries = 1
    while (retries + 2) * (2 ** (retries + 1) - 1) <= deadline_s:
        retries += 1
    return retries


@contextlib.contextmanager
def bounded_upload_retries(deadline_s: float) -> Iterator[None]:
    """kagglehub's ``gcs_upload`` retries a dropped connection ``MAX_RETRIES`` (5) times with backoff
    up to 16 s, and probes the same way after each: about three minutes when the network is gone,
    beyond any deadline of ours and without a word. Within our upload its module constant is lowered
    to what fits ``deadline_s`` (:func:`upload_retries_within`), and restored after; it is read at
    call time, by the upload threads too."""
    from kagglehub import gcs_upload

    saved = gcs_upload.MAX_RETRIES
    gcs_upload.MAX_RETRIES = min(saved, upload_retries_within(deadline_s))
    try:
        yield
    finally:
        gcs_upload.MAX_RETRIES = saved


@dataclass(frozen=True)
class Failure:
    """What one failed call came to: its HTTP status (None: no answer), whether a retry can help,
    and a one-line reason without the token."""

    status: int | None
    retryable: bool
    reason: str


def classify(exc: BaseException) -> Failure | None:
    """A client exception as a :class:`Failure`, or None for one that is not the network's or the hub's."""
    import requests
    from kagglehub.exceptions import BackendError

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        message = _server_message(exc.response) or first_line(exc)
        return Failure(status, status >= 500 or status == 429, f"{status}: {message}")
    if isinstance(exc, requests.Timeout):
        return Failure(None, True, f"no answer in time ({first_line(exc)})")
    if isinstance(exc, requests.ConnectionError):
        why = unreachable_reason(exc)
        return Failure(None, why is None, why or f"the connection failed ({first_line(exc)})")
    if isinstance(exc, BackendError):
        code = exc.error_code
        if code is None:  # kagglehub's upload loop puts the status into the text
            found = _STATUS_IN_TEXT.search(str(exc))
            code = int(found.group(1)) if found else None
        return Failure(code, code is not None and (code >= 500 or code == 429), first_line(exc))
    return None


def _server_message(response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return first_line(Exception(body.get("message", ""))) if isinstance(body, dict) and body.get("message") else ""


class KaggleCaller:
    """Runs client calls quietly with retries under one deadline, and turns what is left into one
    line. ``owner`` is named by 403s; ``location`` (``kaggle://OWNER``) by every message."""

    def __init__(self, location: str, owner: str, *, retries: int, backoff_s: float, deadline_s: float | None) -> None:
        self.location = location
        self.owner = owner
        self.retries = retries
        self.backoff_s = backoff_s
        self.deadline_s = seconds_from_env(DEADLINE_ENV, DEFAULT_DEADLINE_S, given=deadline_s)

    def __call__(
        self,
        what: str,
        fn: Callable[[], T],
        *,
        allow: Callable[[Failure], T | None] | None = None,
        before_retry: Callable[[], T | None] | None = None,
    ) -> T:
        """``fn()``, retried on 5xx, 429 and timeouts. ``allow(failure)`` may turn a failure into a
        result (a 404 that means "none yet"); ``before_retry()`` may find that a failed call went
        through after all (returns non-None: that is the result, nothing is sent twice)."""
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                with quiet():
                    return fn()
            except Exception as exc:
                failure = classify(exc)
                if failure is None:
                    raise
            if allow is not None:
                allowed = allow(failure)
                if allowed is not None:
                    return allowed
            elapsed = time.monotonic() - started
            pause = self.backoff_s * 2**attempt
            if failure.retryable and attempt < self.retries and elapsed + pause < self.deadline_s:
                time.sleep(pause)
                attempt += 1
                if before_retry is not None:
                    done = before_retry()
                    if done is not None:
                        return done
                continue
            raise self.error(what, failure, tries=attempt + 1) from None

    def error(self, what: str, failure: Failure, *, tries: int = 1) -> HubError:
        """The one-line error for a call that failed for good."""
        after = f" after {tries} tries" if tries > 1 else ""
        if failure.status is None:
            return HubUnreachableError(
                f"Kaggle at {endpoint()} did not answer {what}{after}: {failure.reason}; {NETWORK_FIX}"
            )
        if failure.status == 401:
            return MissingTokenError(f"Kaggle rejected the credentials ({failure.reason}); {CREDENTIALS_FIX}")
        if failure.status == 403:
            return MissingTokenError(
                f"Kaggle refused {what} ({failure.reason}): these credentials cannot write to (or read) the "
                f"owner '{self.owner}'; use {self.location} with a token of '{self.owner}' (or of a member of "
                "that organization), or another kaggle://OWNER"
            )
        return HubError(f"Kaggle answered {what} with {failure.reason}{after}; rerun, or check the model on Kaggle")
