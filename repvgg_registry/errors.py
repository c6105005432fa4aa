"""Every error the package raises on purpose, and the one-line form the CLI prints.

The way huggingface_hub does it: one module, one base class (:class:`RegistryError`), and each
error subclassing the builtin it resembles as well, so that callers who know Python but not this
package still catch it (``except ValueError`` catches a bad checkpoint, ``except ConnectionError``
an unreachable hub, ``except LookupError`` an unpublished version). Each carries the data its
message names. The message itself is always one line that names the problem and the fix; the CLI
turns any :class:`RegistryError` into ``error: <message>`` and exit code 2 in one place.

Pure Python on purpose: importing it never pulls TensorFlow in.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SPACE = re.compile(r"\s+")


def one_line(text: object) -> str:
    """``text`` as one printable line: newlines and tabs folded to spaces, control characters
    (which could rewrite a terminal) escaped as ``\\xNN``."""
    folded = _SPACE.sub(" ", str(text)).strip()
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", folded)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type's name), never cut mid-word: a
    message that is long is still the honest one (a cut torch message once turned a refusal into
    advice)."""
    text = str(exc).strip()
    return one_line(text.splitlines()[0]) if text else type(exc).__name__


class RegistryError(Exception):
    """Base of every error this package raises on purpose. ``str()`` is one line."""

    #: the CLI's exit code for this kind of error
    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


# ----- input the user gave ------------------------------------------------------------------
class UsageError(RegistryError, ValueError):
    """An option value out of range or malformed (``--size``, ``--seed``, ``--version``...)."""

    def __init__(self, option: str, value: object, rule: str) -> None:
        self.option = option
        self.value = value
        self.rule = rule
        shown = one_line(repr(value) if isinstance(value, str) else value)
        super().__init__(f"invalid {option} {shown}: {rule}")


class UnknownVariantError(RegistryError, ValueError):
    """A variant name that is not in the table; carries the nearest known name."""

    def __init__(self, name: str, suggestion: str | None) -> None:
        self.name = name
        self.suggestion = suggestion
        hint = f"; did you mean '{suggestion}'?" if suggestion else "; run 'repvgg-registry list'"
        super().__init__(f"unknown variant '{one_line(name)}'{hint}")


class InvalidNameError(RegistryError, ValueError):
    """A name that would become a path or a URL segment (namespace, model name, hub namespace)
    and breaks the rule for it. Refused before anything is built or written."""

    def __init__(self, kind: str, name: str, rule: str) -> None:
        self.kind = kind
        self.name = name
        self.rule = rule
        super().__init__(f"invalid {kind} {one_line(repr(name))}: {rule}")


class InvalidHandleError(InvalidNameError):
    """Text that is not a handle ``<namespace>/<model>/<task>/<version>``."""

    def __init__(self, text: str, rule: str) -> None:
        super().__init__("handle", text, rule)
        self.text = text


class NotARepVGGError(RegistryError, ValueError):
    """A Keras model that is not a RepVGG graph of our naming scheme; names the first layer that
    does not fit (``layer`` is None when the model as a whole does not, e.g. no input)."""

    def __init__(self, message: str, *, layer: str | None = None) -> None:
        self.layer = layer
        super().__init__(message)


# ----- weights and builds -------------------------------------------------------------------
class WeightsError(RegistryError, ValueError):
    """A checkpoint that cannot be loaded, naming the first offending key (and both shapes)."""


class LabelsError(RegistryError, ValueError):
    """A ``--labels`` file that cannot name the classifier's outputs (missing, not UTF-8, empty,
    a blank line, or another count than the head has), or no file where one is needed; ``path`` is
    the file (None when none was given)."""

    def __init__(self, path: object | None, problem: str, fix: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        where = "" if path is None else f"labels file {self.path} "
        super().__init__(f"{where}{problem}; {fix}")


class BuildError(RegistryError, RuntimeError):
    """An artifact failed its check or could not be written; nothing was left behind."""


# ----- hubs ---------------------------------------------------------------------------------
class HubError(RegistryError, RuntimeError):
    """Base of the hub errors (local folder, Hugging Face Hub)."""


class HubStateError(HubError, ValueError):
    """The hub's own records (``index.json``, a manifest) are missing, unreadable or malformed."""

    def __init__(self, path: object, problem: str, fix: str) -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.path}: {problem}; {fix}")


class HubLockedError(HubError, TimeoutError):
    """Another publisher held the hub lock for longer than we wait."""

    def __init__(self, lock: object, holder: str, waited_s: float) -> None:
        self.lock = str(lock)
        self.holder = holder
        self.waited_s = waited_s
        super().__init__(
            f"{self.lock} is held by {holder}; gave up after {waited_s:.0f} s "
            "(set REPVGG_REGISTRY_LOCK_TIMEOUT to wait longer, or rerun when that publish is done)"
        )


class VersionExistsError(HubError, FileExistsError):
    """A version number that is already published: versions are immutable."""

    def __init__(self, message: str, *, where: str = "", version: int | None = None) -> None:
        self.where = where
        self.version = version
        super().__init__(message)

    @classmethod
    def taken(cls, where: str, version: int) -> VersionExistsError:
        return cls(
            f"{where} version {version} is already published and versions are immutable; "
            "omit --version to publish the next one",
            where=where,
            version=version,
        )


class NameTakenError(HubError, FileExistsError):
    """A model name whose published versions are of another base variant: versions of one name
    are one model."""

    def __init__(self, where: str, name: str, base_variant: str, wanted: str) -> None:
        self.where = where
        self.name = name
        self.base_variant = base_variant
        self.wanted = wanted
        super().__init__(
            f"the model name '{name}' is taken in {where} by a RepVGG-{base_variant} model, not RepVGG-{wanted}; "
            "choose another --name"
        )


class NotPublishedError(HubError, LookupError):
    """A handle that names nothing published; carries the versions that do exist."""

    def __init__(self, message: str, *, handle: str = "", available: tuple[int, ...] = ()) -> None:
        self.handle = handle
        self.available = tuple(available)
        super().__init__(message)


class HubUnreachableError(HubError, ConnectionError):
    """The hub could not be reached (no retries for DNS failures or refused connections)."""


class MissingTokenError(HubError, PermissionError):
    """Publishing to a remote hub without credentials."""


class VersionSkewError(HubError, ValueError):
    """A hub that numbers versions itself (Kaggle) holds, or just gave, another number for one of a
    version's parts than for the others: ``where`` is the part, ``found`` its number and ``expected``
    the version's."""

    def __init__(self, message: str, *, where: str, found: int, expected: int) -> None:
        self.where = where
        self.found = found
        self.expected = expected
        super().__init__(message)


class MissingExtraError(RegistryError, ImportError):
    """A feature whose optional dependencies (``extra``) are not installed."""

    def __init__(self, extra: str, message: str) -> None:
        self.extra = extra
        super().__init__(message)


__all__ = [
    "BuildError",
    "HubError",
    "HubLockedError",
    "HubStateError",
    "HubUnreachableError",
    "InvalidHandleError",
    "InvalidNameError",
    "MissingExtraError",
    "MissingTokenError",
    "NotARepVGGError",
    "NotPublishedError",
    "RegistryError",
    "UnknownVariantError",
    "UsageError",
    "VersionExistsError",
    "VersionSkewError",
    "WeightsError",
    "first_line",
    "one_line",
]
