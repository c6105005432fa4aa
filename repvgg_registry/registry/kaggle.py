"""Kaggle Models as a hub (where tfhub.dev went): one Kaggle model per published model, one
framework instance per task and format, versions numbered by Kaggle and kept in step by us.

``kaggle://my-team`` publishes RepVGG-B3g4 to the model ``my-team/repvgg-b3g4`` (a ``--name digits``
model to ``my-team/digits``, :func:`~.hub.hosted_name`), each version as these instances::

    tensorFlow2/feature-vector, classification, feature-maps    the TF Hub SavedModels, at the root
    tensorFlow2/classification-serving, ...                     the inference-only SavedModels
    keras/feature-vector, classification, feature-maps, train   the .keras files (Keras 3)
    tfLite/feature-vector, ...                                  .tflite (and .int8.tflite)
    onnx/feature-vector, ...                                    .onnx

so ``hub.KerasLayer(kagglehub.model_download("my-team/repvgg-b3g4/tensorFlow2/feature-vector/1"))``
works as it did on tfhub.dev. Each instance also holds its task's ``<task>.manifest.json``: every
file's sha256, and the sha256 of the TF Hub archive, which ``verify`` rebuilds from the downloaded
folder (our archives are byte-reproducible) rather than uploading it a second time.

Versions. Kaggle numbers each instance's versions itself, one by one. Before uploading, the current
number of every instance is read: they must all be the same M, and every upload must come back as
M + 1; anything else (someone published in between, an earlier publish cut short) stops with a
:class:`~repvgg_registry.errors.VersionSkewError` naming the instance and both numbers. A publish
that fails midway keeps its staged files (``$XDG_CACHE_HOME/repvgg-registry/kaggle``), and the
same publish run again finishes that version from them, without building, so no number is skipped.

Records. kagglehub sends no version notes with an instance's first version (CreateModelInstance has
no such field), and Kaggle shows notes only for the latest version. So each instance's overview
ends with a checksum table, one row per file and version, that ``versions``, ``verify`` and
``list`` read back; versions from 2 on also carry the same checksums in their version notes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..errors import (
    HubError,
    InvalidNameError,
    MissingTokenError,
    NameTakenError,
    NotPublishedError,
    UsageError,
    VersionExistsError,
    VersionSkewError,
    one_line,
)
from ..hashing import sha256_file
from ..publish.archive import walk_files, write_archive
from ..publish.card import markdown_text
from ..publish.release import (
    MANIFEST_SUFFIX,
    ArtifactFiles,
    artifact_files,
    primary_record,
    read_staged,
    staged_files,
)
from ..publish.tasks import RELEASE_TASKS, TASKS, TRAIN, has_savedmodel, is_serving
from . import kaggle_api
from .card_parts import card_meta, custom_section, digest_rows, model_title, staged_labels
from .hub import (
    DEFAULT_NAMESPACE,
    VARIANT_PREFIX,
    Handle,
    Hub,
    VersionInfo,
    hosted_name,
    shadowed_variant,
    validate_name,
    validate_version,
    variant_named,
)

SCHEME = "kaggle://"
#: Kaggle's rule for user and organization names, and for model slugs
OWNER_RULE = "use a Kaggle user or organization name: lower-case letters, digits and '-', at most 50 characters"
SLUG_RULE = "a Kaggle model slug holds lower-case letters, digits and '-' only; choose another --name"
_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?")
LICENSE = "MIT"
PENDING_ENV = "REPVGG_REGISTRY_KAGGLE_PENDING"
PENDING_FILE = "pending.json"

#: Kaggle's frameworks of our instances, as its handles spell them, in the order a version uploads them
FRAMEWORKS = ("tensorFlow2", "keras", "tfLite", "onnx")
#: One row of an instance's checksum table (:class:`RecordRow`)
_RECORD_ROW = re.compile(
    r"^\| (?P<version>[1-9][0-9]*) \| (?P<created>\S+) \| (?P<variant>\S+) \| (?P<weights>(?:[^|\\]|\\.)*) "
    r"\| (?P<file>\S+) \| `(?P<sha256>[0-9a-f]{64})` \|$",
    re.M,
)
_RECORD_HEADING = "## Checksums"


def validate_owner(owner: str) -> str:
    if not (isinstance(owner, str) and _SLUG.fullmatch(owner)):
        raise InvalidNameError("Kaggle owner", owner, OWNER_RULE)
    return owner


def parse_location(location: str) -> str:
    """The owner of ``kaggle://OWNER``; anything else (no owner, a path after it) is one line."""
    owner = location[len(SCHEME) :].strip("/") if location.startswith(SCHEME) else ""
    if not owner or "/" in owner:
        raise UsageError(
            "--hub",
            location,
            "use kaggle://OWNER, e.g. kaggle://my-team (the model name comes from the variant or --name)",
        )
    return validate_owner(owner)


def pending_root() -> Path:
    """Where a publish cut short keeps its staged files: ``$REPVGG_REGISTRY_KAGGLE_PENDING``, else
    ``$XDG_CACHE_HOME/repvgg-registry/kaggle`` (``~/.cache``)."""
    if os.environ.get(PENDING_ENV):
        return Path(os.environ[PENDING_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "repvgg-registry" / "kaggle"


# ----- what one version uploads ------------------------------------------------------------
def variation_of(task: str) -> str:
    """The Kaggle variation slug of a task (``feature_vector`` -> ``feature-vector``): Kaggle slugs
    have no ``_``. The one owner of that spelling."""
    return task.replace("_", "-")


@dataclass(frozen=True)
class Instance:
    """One Kaggle framework instance of one task: ``roles`` are the files of the task's
    :class:`ArtifactFiles` it holds (``folder``: the SavedModel's files at the instance root)."""

    task: str
    framework: str
    roles: tuple[str, ...]

    @property
    def variation(self) -> str:
        return variation_of(self.task)

    @property
    def key(self) -> tuple[str, str]:
        return self.framework.lower(), self.variation

    def handle(self, owner: str, slug: str, version: int | None = None) -> str:
        base = f"{owner}/{slug}/{self.framework}/{self.variation}"
        return base if version is None else f"{base}/{version}"

    @property
    def name(self) -> str:
        """``keras/train``: how messages name it."""
        return f"{self.framework}/{self.variation}"


def instances_of(task: str, manifest: dict) -> list[Instance]:
    """The instances of ``task``, those of the optional files only when its manifest records them:
    the SavedModel first (its instance holds the record a handle's row is read from), then ``.keras``."""
    found: list[Instance] = []
    if has_savedmodel(task):
        found.append(Instance(task, "tensorFlow2", ("folder",)))
    if "keras" in manifest and not is_serving(task):
        found.append(Instance(task, "keras", ("keras",)))
    lite = tuple(role for role in ("tflite", "tflite_int8") if role in manifest)
    if lite:
        found.append(Instance(task, "tfLite", lite))
    if "onnx" in manifest:
        found.append(Instance(task, "onnx", ("onnx",)))
    return found


def release_plan(manifests: dict[str, dict]) -> list[Instance]:
    return [inst for task in RELEASE_TASKS if task in manifests for inst in instances_of(task, manifests[task])]


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or links refused
        shutil.copy2(source, target)


@contextlib.contextmanager
def upload_folder(inst: Instance, release: Path, scratch: Path) -> Iterator[Path]:
    """The folder kagglehub uploads for ``inst``: the SavedModel's files at the root, or the files of
    its roles by their release names, and the task's manifest; linked, not copied, where it can."""
    files = staged_files(release, inst.task)
    folder = Path(tempfile.mkdtemp(prefix=f"{inst.task}-{inst.framework}-", dir=scratch))
    try:
        for role in inst.roles:
            path = files.roles()[role]
            if role == "folder":
                for file in walk_files(path):
                    _link_or_copy(file, folder / file.relative_to(path))
            else:
                _link_or_copy(path, folder / path.name)
        _link_or_copy(files.manifest, folder / files.manifest.name)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ----- the checksum record in each instance's overview -------------------------------------
@dataclass(frozen=True)
class RecordRow:
    version: int
    created: str
    variant: str
    weights: str
    file: str
    sha256: str

    def render(self) -> str:
        weights = one_line(self.weights).replace("\\", "\\\\").replace("|", "\\|")
        return f"| {self.version} | {self.created} | {self.variant} | {weights} | {self.file} | `{self.sha256}` |"


def record_rows(inst: Instance, version: int, manifest: dict, manifest_sha256: str) -> list[RecordRow]:
    """The rows one version of ``inst`` adds: the sha256 of its files (the SavedModel's as the TF Hub
    archive's, which ``verify`` rebuilds from the folder) and of the manifest uploaded with them."""
    roles = ["archive" if role == "folder" else role for role in inst.roles]
    weights = str(manifest["weights"].get("source", "?"))
    common = (version, manifest["created"], manifest.get("variant") or "?", weights)
    rows = [RecordRow(*common, manifest[role]["name"], manifest[role]["sha256"]) for role in roles]
    name = artifact_files(Path(inst.task), inst.task).manifest.name
    return [*rows, RecordRow(*common, name, manifest_sha256)]


def parse_record(overview: str) -> list[RecordRow]:
    rows = []
    for match in _RECORD_ROW.finditer(overview or ""):
        weights = re.sub(r"\\(.)", r"\1", match["weights"])
        rows.append(
            RecordRow(
                int(match["version"]), match["created"], match["variant"], weights, match["file"], match["sha256"]
            )
        )
    return rows


def render_overview(inst: Instance, title: str, rows: list[RecordRow]) -> str:
    """The instance's overview: what it holds and how to load it, then the checksum table."""
    what = {
        "tensorFlow2": "the TF Hub Reusable SavedModel (tf_keras and `tensorflow_hub`), at the root"
        if not is_serving(inst.task)
        else "the inference-only SavedModel, weights as graph constants (TF Serving)",
        "keras": "the `.keras` file for Keras 3 (`keras.saving.load_model`, no custom objects)",
        "tfLite": "LiteRT files (`ai_edge_litert.interpreter.Interpreter`, input `images`)",
        "onnx": "the ONNX file, opset 17, NHWC input `images` (onnxruntime, OpenVINO, TensorRT)",
    }[inst.framework]
    table = "\n".join(row.render() for row in sorted(rows, key=lambda r: (r.version, r.file)))
    return f"""{markdown_text(title)}, {inst.task.replace("_", " ")}: {what}.

Images float32 `[batch, height, width, 3]` in [0, 1], any size, normalised inside. Published by
repvgg-registry; `{inst.task}.manifest.json` in each version lists the sha256 of every file.

{_RECORD_HEADING}

One row per file and version, written at each publish; `repvgg-registry verify` checks a download
against it (the `.tar.gz` row is the TF Hub archive, rebuilt byte for byte from the SavedModel folder).

| version | created | variant | weights | file | sha256 |
|---|---|---|---|---|---|
{table}
"""


def version_notes(title: str, version: int, rows: list[RecordRow]) -> str:
    files = "; ".join(f"{row.file} sha256 {row.sha256}" for row in rows)
    return f"{title} v{version} by repvgg-registry: {files}"


def usage_text(inst: Instance, owner: str, slug: str, version: int) -> str:
    """The instance's usage snippet: download this version, load it in its runtime."""
    handle = inst.handle(owner, slug, version)
    load = {
        "tensorFlow2": ("import tensorflow_hub as hub", "layer = hub.KerasLayer(path, trainable=True)   # tf_keras")
        if not is_serving(inst.task)
        else ("import tensorflow as tf", "model = tf.saved_model.load(path)   # or TF Serving's --model_base_path"),
        "keras": ("import keras", f'model = keras.saving.load_model(path + "/{inst.task}.keras")'),
        "tfLite": (
            "from ai_edge_litert.interpreter import Interpreter",
            f'interpreter = Interpreter(model_path=path + "/{inst.task}.tflite")',
        ),
        "onnx": ("import onnxruntime", f'session = onnxruntime.InferenceSession(path + "/{inst.task}.onnx")'),
    }[inst.framework]
    return f'```python\nimport kagglehub\n{load[0]}\npath = kagglehub.model_download("{handle}")\n{load[1]}\n```\n'


def kaggle_card(model: str, owner: str, slug: str, version: int, manifests: dict[str, dict], labels=()) -> str:
    """The Kaggle model's description (its model card): what each instance is, the sha256 of this
    version's files, and how to load them with kagglehub."""
    meta = card_meta(model, manifests)
    weights = manifests["classification"]["weights"]
    rows = "\n".join(
        f"| `{inst.name}` | {inst.task} | {', '.join(_files_of(inst, manifests[inst.task]))} |"
        for inst in release_plan(manifests)
    )
    handle = f"{owner}/{slug}/tensorFlow2/feature-vector/{version}"
    keras_handle = f"{owner}/{slug}/keras/feature-vector/{version}"
    random = " **Random weights, for pipeline tests only.**" if weights.get("source") == "random" else ""
    return f"""# {model_title(model, manifests, markdown_text)} for Keras 3 and TensorFlow / TF Hub
{custom_section(meta, labels)}
RepVGG in its fused deploy form (one 3x3 conv per block), published by repvgg-registry from
{markdown_text(weights.get("source", "?"))} weights.{random} Every model takes images float32
`[batch, height, width, 3]` in [0, 1], of any size, and normalises them (ImageNet mean/std) inside.

| instance | task | files |
|---|---|---|
{rows}

Each instance's version holds `<task>.manifest.json`, the sha256 of every file; each instance's
overview keeps the checksums of all its versions. Kaggle numbers the versions; repvgg-registry
keeps them in step: version {version} of every instance is one build.

| | |
|---|---|
| version | {version} |
{digest_rows(manifests)}

## Use

```python
import kagglehub, tensorflow_hub as hub
path = kagglehub.model_download("{handle}")
backbone = hub.KerasLayer(path, trainable=True)   # tf_keras
```

Keras 3:

```python
import keras, kagglehub
path = kagglehub.model_download("{keras_handle}")
backbone = keras.saving.load_model(path + "/feature_vector.keras")
```

{_fine_tune_line(TRAIN in manifests)}
"""


def _fine_tune_line(has_train: bool) -> str:
    if has_train:
        return (
            "To fine-tune, train `keras/train` (the multi-branch train form, any optimizer), then fuse it with\n"
            "`repvgg_registry.variants.fuse`."
        )
    return "This model was built from a deploy-form source and has no train form: fine-tune the fused `.keras` files."


def _files_of(inst: Instance, manifest: dict) -> list[str]:
    names = ["SavedModel" if role == "folder" else f"`{manifest[role]['name']}`" for role in inst.roles]
    return names + [f"`{inst.task}{MANIFEST_SUFFIX}`"]


# ----- the hub -----------------------------------------------------------------------------
@dataclass
class _Pending:
    """A publish cut short: its version and its staged release, kept to finish it."""

    folder: Path
    version: int
    model: str

    @property
    def release(self) -> Path:
        return self.folder / "release"


class KaggleHub(Hub):
    """Publishes to and reads from Kaggle Models with the official ``kagglehub`` client (the
    ``kaggle`` extra); credentials and endpoint as kagglehub finds them (``KAGGLE_API_TOKEN`` or
    ``~/.kaggle``; ``KAGGLE_API_ENVIRONMENT``). Calls fail fast, quietly and in one line
    (:class:`~.kaggle_api.KaggleCaller`)."""

    def __init__(
        self,
        owner: str,
        *,
        private: bool = False,
        retries: int = 4,
        backoff_s: float = 1.0,
        deadline_s: float | None = None,
        pending_dir: str | Path | None = None,
        handle_namespace: str = DEFAULT_NAMESPACE,
    ) -> None:
        kaggle_api.require_kagglehub()
        self.owner = validate_owner(owner)
        self.namespace = validate_name(handle_namespace, "namespace")
        self.private = private
        self.pending_dir = Path(pending_dir) if pending_dir is not None else pending_root()
        self._call = kaggle_api.KaggleCaller(
            self.location, self.owner, retries=retries, backoff_s=backoff_s, deadline_s=deadline_s
        )
        self.index_warnings = []

    def __repr__(self) -> str:
        return f"KaggleHub({self.owner!r})"

    @property
    def location(self) -> str:
        return f"{SCHEME}{self.owner}"

    # ----- names -------------------------------------------------------------------------
    def _slug(self, model: str, *, writing: bool = False) -> str:
        """The Kaggle model slug of ``model`` (:func:`hosted_name`); a name Kaggle refuses, or (to
        write) a custom name that is a variant's own slug, is one line."""
        key = validate_name(model.lower(), "model name")
        slug = hosted_name(key)
        if not _SLUG.fullmatch(slug):
            raise InvalidNameError("model name", model, SLUG_RULE)
        if writing and shadowed_variant(key) is not None:
            raise InvalidNameError(
                "model name",
                model,
                f"on Kaggle it would share {self.owner}/{slug} with RepVGG-{shadowed_variant(key)}'s own "
                "releases; choose another --name",
            )
        return slug

    def _pending_folder(self, slug: str) -> Path:
        return self.pending_dir / self.owner / slug

    # ----- calls -------------------------------------------------------------------------
    def _client(self):
        from kagglehub.clients import build_kaggle_client

        return build_kaggle_client()

    def _model_request(self, cls, slug: str):
        request = cls()
        request.owner_slug, request.model_slug = self.owner, slug
        return request

    def _instance_request(self, cls, slug: str, inst: Instance):
        """A request of ``cls`` naming ``inst``, its framework mapped as kagglehub maps a handle's."""
        from kagglehub.handle import parse_model_handle

        h = parse_model_handle(inst.handle(self.owner, slug))
        request = self._model_request(cls, slug)
        request.instance_slug, request.framework = h.variation, h.framework_enum()
        return request

    def _pages(self, what: str, make_request, method: str, *, missing_ok: bool = False) -> Iterator:
        """The responses of a paged List call (``make_request()`` builds the request, ``method`` names
        the client's), page by page; with ``missing_ok``, none when Kaggle answers 404."""
        from kagglehub.exceptions import handle_call

        token = ""
        while True:

            def page(token=token):
                request = make_request()
                request.page_token = token
                with self._client() as client:
                    return handle_call(lambda: getattr(client.models.model_api_client, method)(request))

            response = self._call(what, page, allow=lambda f: False if missing_ok and f.status == 404 else None)
            if response is False:
                return
            yield response
            token = response.next_page_token
            if not token:
                return

    def _instances(self, slug: str) -> dict[tuple[str, str], object]:
        """``{(framework, variation): ApiModelInstance}`` of the model (``framework`` lower-case,
        as :attr:`Instance.key`); {} when the model does not exist."""
        from kagglehub.enum import enum_to_str
        from kagglesdk.models.types.model_api_service import ApiListModelInstancesRequest

        pages = self._pages(
            f"the listing of {self.owner}/{slug}",
            lambda: self._model_request(ApiListModelInstancesRequest, slug),
            "list_model_instances",
            missing_ok=True,
        )
        return {(enum_to_str(item.framework).lower(), item.slug): item for page in pages for item in page.instances}

    def _instance_version(self, slug: str, inst: Instance) -> int:
        """The number of the newest version of ``inst`` (0: none yet), read from Kaggle now."""
        from kagglehub.exceptions import handle_call
        from kagglesdk.models.types.model_api_service import ApiGetModelInstanceRequest

        def get():
            request = self._instance_request(ApiGetModelInstanceRequest, slug, inst)
            with self._client() as client:
                return handle_call(lambda: client.models.model_api_client.get_model_instance(request)).version_number

        return self._call(
            f"the version of {inst.handle(self.owner, slug)}", get, allow=lambda f: 0 if f.status == 404 else None
        )

    def _mutate(self, what: str, build, method: str) -> None:
        """One create/update call: ``build()`` makes the request, ``method`` names the client's."""
        from kagglehub.exceptions import handle_mutate_call

        def call():
            request = build()
            with self._client() as client:
                return handle_mutate_call(lambda: getattr(client.models.model_api_client, method)(request))

        self._call(what, call)

    # ----- checks before any build -------------------------------------------------------
    def check_can_publish(self) -> None:
        """Credentials exist where kagglehub looks; the token itself is never shown."""
        if not kaggle_api.has_credentials():
            raise MissingTokenError(
                f"no Kaggle credentials to publish to {self.location}: {kaggle_api.CREDENTIALS_FIX}"
            )

    def preflight(self, model: str, *, version: int | None = None, base_variant: str | None = None) -> None:
        """Before any build: the model name (a Kaggle slug, not a variant's), credentials, that Kaggle
        answers and lets them read the owner's model (401, 403), that its instances are in step (or
        a publish cut short is here to finish), that ``version`` is the one Kaggle will number, and
        that the name's versions are of ``base_variant``."""
        key = validate_name(model.lower(), "model name")
        validate_version(version)
        slug = self._slug(key, writing=True)
        self.check_can_publish()
        current = self._instances(slug)
        pending = self._read_pending(slug)
        self._check_version(slug, version, pending.version if pending else self._next_version(slug, current))
        if base_variant is not None:
            bases = {row.variant for inst in current.values() for row in parse_record(inst.overview)}
            if bases and base_variant not in bases:
                raise NameTakenError(self.location, key, sorted(bases)[0], base_variant)

    def _next_version(self, slug: str, current: dict, plan: list[Instance] | None = None) -> int:
        """One more than the number our instances are at. Without ``plan`` (before a build) the
        instances every publish makes (the SavedModels and ``.keras`` files of the three tasks) must
        be in step; with it, every instance of the plan must be at the newest number: one that lags,
        or is new while the others have versions, stops with a :class:`VersionSkewError` naming it
        and both numbers (Kaggle numbers each instance by itself, one by one)."""
        numbers = {key: item.version_number for key, item in current.items() if key in _OUR_KEYS}
        checked = {inst.key for inst in plan} if plan is not None else _CORE_KEYS & numbers.keys()
        if plan is not None:
            numbers = {key: 0 for key in checked} | numbers
        if not numbers:
            return 1
        top = max(numbers.values())
        for key in sorted(checked):
            number = numbers[key]
            if number == top:
                continue
            leader = next(_instance_name(k) for k, n in sorted(numbers.items()) if n == top)
            where = f"{self.owner}/{slug}: instance {_instance_name(key)}"
            if number == 0:
                raise VersionSkewError(
                    f"{where} is new, so Kaggle would number its first version 1, but {leader} is at version {top}: a "
                    "format cannot join after version 1; publish with the --formats of the earlier versions",
                    where=_instance_name(key),
                    found=0,
                    expected=top,
                )
            raise VersionSkewError(
                f"{where} is at version {number} but {leader} is at {top}: an earlier publish stopped midway, or "
                f"someone published in between. Rerun that publish on the machine that started it to finish it "
                f"(it keeps its files in {self._pending_folder(slug)}), or on Kaggle delete the versions above "
                f"{number} of the instances ahead, then rerun",
                where=_instance_name(key),
                found=number,
                expected=top,
            )
        return top + 1

    # ----- a publish cut short -----------------------------------------------------------
    def _read_pending(self, slug: str) -> _Pending | None:
        folder = self._pending_folder(slug)
        try:
            data = json.loads((folder / PENDING_FILE).read_text())
            pending = _Pending(folder, int(data["version"]), str(data["model"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return pending if pending.release.is_dir() else None

    def pending_version(self, model: str) -> int | None:
        pending = self._read_pending(self._slug(model))
        return pending.version if pending else None

    def staging_dir(self) -> Path:
        """Inside the pending folder's file system, so that keeping a staged release is a rename."""
        root = self.pending_dir / ".staging"
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="repvgg-release-", dir=root))

    def _keep_pending(self, slug: str, key: str, staged: Path, version: int) -> Path:
        folder = self._pending_folder(slug)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        shutil.move(str(staged), folder / "release")
        record = {"version": version, "model": key, "owner": self.owner, "slug": slug, "since": _now()}
        (folder / PENDING_FILE).write_text(json.dumps(record, indent=2) + "\n")
        return folder

    # ----- writing -----------------------------------------------------------------------
    def finish_pending(self, model: str) -> list[VersionInfo]:
        """Finish the publish of ``model`` that was cut short, from the files it kept."""
        key = model.lower()
        slug = self._slug(key, writing=True)
        pending = self._read_pending(slug)
        if pending is None:
            raise NotPublishedError(f"no unfinished publish of {self.owner}/{slug} on this machine")
        number, manifests, current = pending.version, read_staged(pending.release), self._instances(slug)
        for inst in release_plan(manifests):  # each instance is where the cut-short publish left it, or stale
            at = current[inst.key].version_number if inst.key in current else 0
            if at not in (number - 1, number):
                raise VersionSkewError(
                    f"{self.owner}/{slug}: instance {inst.name} is at version {at}, not {number - 1} or {number}: "
                    f"someone published to it meanwhile; on Kaggle delete its versions above {number - 1}, then rerun "
                    f"to finish version {number}",
                    where=inst.name,
                    found=at,
                    expected=number,
                )
        return self._upload_release(key, slug, pending.release, manifests, current, number, finishing=True)

    def publish_staged(self, variant: str, staged: Path, *, version: int | None = None) -> list[VersionInfo]:
        """Publish ``staged`` as the next version of the model ``variant`` (a variant's own name or a
        ``--name``): every instance as version N, N the same for all of them."""
        key = validate_name(variant.lower(), "model name")
        slug = self._slug(key, writing=True)
        if self._read_pending(slug) is not None:
            return self.finish_pending(key)
        manifests, current = read_staged(staged), self._instances(slug)
        number = self._next_version(slug, current, release_plan(manifests))  # every instance at number - 1
        self._check_version(slug, version, number)
        return self._upload_release(key, slug, staged, manifests, current, number, finishing=False)

    def _check_version(self, slug: str, version: int | None, expected: int) -> None:
        """``--version`` is the number Kaggle will give, or one line names that number."""
        if version is not None and version != expected:
            raise VersionExistsError(
                f"Kaggle numbers versions itself: the next version of {self.owner}/{slug} is {expected}, "
                f"not {version}; omit --version or pass --version {expected}",
                where=f"{self.owner}/{slug}",
                version=version,
            )

    def _upload_release(
        self, key: str, slug: str, release: Path, manifests: dict, current: dict, number: int, *, finishing: bool
    ) -> list[VersionInfo]:
        """Upload every instance of ``release`` that ``current`` (the listing) does not show at
        ``number`` yet, and write its record; the model card last."""
        plan = release_plan(manifests)
        title = model_title(key, manifests)
        shas = {task: sha256_file(staged_files(release, task).manifest) for task in manifests}
        done = {inst.key for inst in plan if inst.key in current and current[inst.key].version_number == number}
        try:
            self._ensure_model(slug, title, manifests)
            for inst in plan:
                rows = record_rows(inst, number, manifests[inst.task], shas[inst.task])
                if inst.key not in done:
                    self._upload_instance(inst, slug, release, number, version_notes(title, number, rows))
                    done.add(inst.key)
                self._write_record(inst, slug, number, title, rows, getattr(current.get(inst.key), "overview", ""))
            self._write_card(key, slug, number, manifests, staged_labels(release))
        except HubError as exc:
            if not done:  # nothing has version N yet: no number to keep free, nothing to finish
                raise
            folder = self._pending_folder(slug) if finishing else self._keep_pending(slug, key, release, number)
            if not isinstance(exc, VersionSkewError):  # that one says how to repair it
                exc.args = (
                    one_line(
                        f"{exc}; version {number} of {self.owner}/{slug} is unfinished: rerun the same publish to "
                        f"finish it from the files kept in {folder}"
                    ),
                )
            raise
        if finishing:
            shutil.rmtree(self._pending_folder(slug), ignore_errors=True)
        return [
            self._info(slug, Handle(self.namespace, key, task, number), manifests[task])
            for task in RELEASE_TASKS
            if task in manifests
        ]

    def _ensure_model(self, slug: str, title: str, manifests: dict) -> None:
        from kagglehub.exceptions import handle_call
        from kagglesdk.models.types.model_api_service import ApiCreateModelRequest, ApiGetModelRequest

        def get():
            with self._client() as client:
                request = self._model_request(ApiGetModelRequest, slug)
                return handle_call(lambda: client.models.model_api_client.get_model(request))

        if (
            self._call(f"the model {self.owner}/{slug}", get, allow=lambda f: False if f.status == 404 else None)
            is not False
        ):
            return

        def create():
            request = ApiCreateModelRequest()
            request.owner_slug, request.slug, request.title = self.owner, slug, title
            request.subtitle = _subtitle(manifests)
            request.is_private = self.private
            request.provenance_sources = _provenance(manifests)
            return request

        self._mutate(f"the creation of {self.owner}/{slug}", create, "create_model")

    def _upload_instance(self, inst: Instance, slug: str, release: Path, number: int, notes: str) -> None:
        import kagglehub

        handle = inst.handle(self.owner, slug)
        scratch = self.pending_dir / ".staging"
        scratch.mkdir(parents=True, exist_ok=True)
        # half the deadline for kagglehub's own retries of a dropped connection, the rest for ours
        bounded = kaggle_api.bounded_upload_retries(self._call.deadline_s / 2)
        with upload_folder(inst, release, scratch) as folder, bounded:
            self._call(
                f"the upload of {handle}",
                lambda: kagglehub.model_upload(handle, str(folder), license_name=LICENSE, version_notes=notes),
                # a retry first asks whether the failed try made the version after all
                before_retry=lambda: True if self._instance_version(slug, inst) >= number else None,
            )
        got = self._instance_version(slug, inst)
        if got != number:
            raise VersionSkewError(
                f"Kaggle numbered {handle} version {got}, not {number} (someone published to it meanwhile); on Kaggle "
                f"delete its versions above {number - 1}, then rerun to finish version {number}",
                where=inst.name,
                found=got,
                expected=number,
            )

    def _write_record(
        self, inst: Instance, slug: str, number: int, title: str, new: list[RecordRow], overview: str
    ) -> None:
        """Append this version's rows to the instance's checksum table in ``overview`` (as listed
        before the upload, which leaves it as it was; "" for an instance the upload created), and set
        its usage."""
        from google.protobuf.field_mask_pb2 import FieldMask
        from kagglesdk.models.types.model_api_service import ApiUpdateModelInstanceRequest

        rows = [row for row in parse_record(overview) if row.version != number] + new

        def build():
            request = self._instance_request(ApiUpdateModelInstanceRequest, slug, inst)
            request.overview = render_overview(inst, title, rows)
            request.usage = usage_text(inst, self.owner, slug, number)
            request.fine_tunable = inst.framework in ("tensorFlow2", "keras") and not is_serving(inst.task)
            request.update_mask = FieldMask(paths=["overview", "usage", "fine_tunable"])
            return request

        self._mutate(f"the record of {inst.handle(self.owner, slug)}", build, "update_model_instance")

    def _write_card(self, key: str, slug: str, number: int, manifests: dict, labels) -> None:
        from google.protobuf.field_mask_pb2 import FieldMask
        from kagglesdk.models.types.model_api_service import ApiUpdateModelRequest

        def build():
            request = self._model_request(ApiUpdateModelRequest, slug)
            request.subtitle = _subtitle(manifests)
            request.description = kaggle_card(key, self.owner, slug, number, manifests, labels)
            request.provenance_sources = _provenance(manifests)
            request.update_mask = FieldMask(paths=["subtitle", "description", "provenance_sources"])
            return request

        self._mutate(f"the model card of {self.owner}/{slug}", build, "update_model")

    # ----- reading -----------------------------------------------------------------------
    def _records(self, slug: str) -> dict[tuple[str, str], list[RecordRow]]:
        return {key: parse_record(item.overview) for key, item in self._instances(slug).items()}

    def _page(self, slug: str, handle: Handle) -> str:
        """The Kaggle page of a handle: its task's primary instance at its version."""
        return (
            f"{kaggle_api.web_url()}/models/{_primary_instance(handle.task).handle(self.owner, slug, handle.version)}"
        )

    def _info(self, slug: str, handle: Handle, manifest: dict) -> VersionInfo:
        return VersionInfo(
            handle,
            manifest["created"],
            manifest["weights"]["source"],
            primary_record(manifest)["sha256"],
            self._page(slug, handle),
            manifest.get("variant"),
        )

    def versions(self, variant: str) -> list[VersionInfo]:
        """Every handle of the model, oldest version first, read from each task's primary instance's
        checksum table (no downloads); an instance version without rows is named in ``index_warnings``."""
        key = variant.lower()
        slug = self._slug(key)
        instances = self._instances(slug)
        self.index_warnings = []
        rows = []
        for task in RELEASE_TASKS:
            primary = _primary_instance(task)
            item = instances.get(primary.key)
            if item is None:
                continue
            record = _primary_rows(task, item.overview)
            for number in sorted(record):
                row = record[number]
                handle = Handle(self.namespace, key, task, number)
                rows.append(
                    VersionInfo(handle, row.created, row.weights, row.sha256, self._page(slug, handle), row.variant)
                )
            if item.version_number and item.version_number not in record:
                self.index_warnings.append(
                    f"{primary.handle(self.owner, slug, item.version_number)} has no checksum row (published by "
                    "something else than repvgg-registry, or its publish is unfinished); it is not listed"
                )
        return sorted(rows, key=lambda v: (v.handle.version, RELEASE_TASKS.index(v.handle.task)))

    def recorded_checksums(self, handle: Handle) -> dict[str, str]:
        """``{role: sha256}`` of the handle's files from the checksum tables of its task's instances."""
        slug = self._slug(handle.variant)
        names = {path.name: role for role, path in artifact_files(Path(handle.task), handle.task).roles().items()}
        found: dict[str, str] = {}
        for key, rows in self._records(slug).items():
            if key[1] != variation_of(handle.task):
                continue
            for row in rows:
                if row.version == handle.version and row.file in names:
                    found.setdefault(names[row.file], row.sha256)
        return found

    def artifact_files(self, handle: Handle) -> ArtifactFiles:
        """Downloads the task's instances at the handle's version and lays them out by the release's
        naming rule (``<task>/``, ``<task>.keras``, ``<task>.manifest.json``...), the TF Hub archive
        rebuilt from the SavedModel folder, so ``verify`` checks them as it checks a local version."""
        import kagglehub

        slug = self._slug(handle.variant)
        instances = self._instances(slug)
        task = handle.task
        present = [  # an instance that lags (a format left out since) has no such version
            inst
            for framework in FRAMEWORKS
            for inst in [Instance(task, framework, ())]
            if inst.key in instances and instances[inst.key].version_number >= handle.version
        ]
        primary = instances.get(_primary_instance(task).key)
        available = tuple(range(1, primary.version_number + 1)) if primary is not None else ()
        if handle.version not in available:
            raise NotPublishedError(
                f"{self.owner}/{slug} has no version {handle.version} of {task}; see "
                f"'repvgg-registry versions {handle.variant} --hub {self.location}'",
                handle=str(handle),
                available=available,
            )
        view = _view_folder(self.owner, slug, task, handle.version)
        files = artifact_files(view / task, task)
        for inst in present:
            path = Path(
                self._call(
                    f"the download of {inst.handle(self.owner, slug, handle.version)}",
                    lambda inst=inst: kagglehub.model_download(inst.handle(self.owner, slug, handle.version)),
                )
            )
            manifest = path / files.manifest.name
            if manifest.is_file() and not files.manifest.exists():
                _link_or_copy(manifest, files.manifest)
            for file in walk_files(path, follow_links=True):
                if file.name == files.manifest.name and file.parent == path:
                    continue
                target = (
                    (files.folder / file.relative_to(path)) if inst.framework == "tensorFlow2" else view / file.name
                )
                _link_or_copy(file, target)
        if files.folder is not None and files.folder.is_dir():
            write_archive(files.folder, files.archive)
        return files

    def published_models(self) -> dict[str, dict[str, list[int]]]:
        """``{base variant: {model name: [versions]}}`` of the owner's models that hold our records."""
        from kagglesdk.models.types.model_api_service import ApiListModelsRequest

        def listing():
            request = ApiListModelsRequest()
            request.owner = self.owner
            return request

        slugs = [
            m.slug for page in self._pages(f"the models of {self.owner}", listing, "list_models") for m in page.models
        ]
        out: dict[str, dict[str, list[int]]] = {}
        for slug in slugs:
            name = slug.removeprefix(VARIANT_PREFIX) if variant_named(slug.removeprefix(VARIANT_PREFIX)) else slug
            item = self._instances(slug).get(_primary_instance("classification").key)
            for row in _primary_rows("classification", getattr(item, "overview", "")).values():
                out.setdefault(row.variant, {}).setdefault(name, []).append(row.version)
        return {base: {name: sorted(set(v)) for name, v in models.items()} for base, models in out.items()}


#: The Kaggle spelling of each framework, by the lower-case key the listing gives
_FRAMEWORKS = {name.lower(): name for name in FRAMEWORKS}
#: Every instance key this package makes, and those every publish makes
_OUR_KEYS = {(fw, variation_of(task)) for fw in _FRAMEWORKS for task in RELEASE_TASKS}
_CORE_KEYS = {(fw, variation_of(task)) for fw in ("tensorflow2", "keras") for task in TASKS}


def _instance_name(key: tuple[str, str]) -> str:
    """``tensorFlow2/feature-vector`` for the key ``("tensorflow2", "feature-vector")``."""
    return f"{_FRAMEWORKS.get(key[0], key[0])}/{key[1]}"


def _primary_instance(task: str) -> Instance:
    return Instance(task, "tensorFlow2" if has_savedmodel(task) else "keras", ())


def _primary_rows(task: str, overview: str) -> dict[int, RecordRow]:
    """``{version: row}`` of the file a handle's sha256 is of (the TF Hub archive, or ``train.keras``)
    in an instance's checksum table."""
    files = artifact_files(Path(task), task)
    name = (files.archive or files.keras).name
    return {row.version: row for row in parse_record(overview) if row.file == name}


def _view_folder(owner: str, slug: str, task: str, version: int) -> Path:
    """A fresh folder, beside kagglehub's cache, where a download is laid out by our naming rule."""
    from kagglehub.config import get_cache_folder

    view = Path(get_cache_folder()) / "repvgg-registry" / owner / slug / str(version)
    shutil.rmtree(view / task, ignore_errors=True)
    for name in os.listdir(view) if view.is_dir() else []:
        if name.startswith(task + "."):
            (view / name).unlink()
    view.mkdir(parents=True, exist_ok=True)
    return view


def _subtitle(manifests: dict) -> str:
    """``RepVGG-A0, fused: TF Hub SavedModels, Keras 3, LiteRT, ONNX`` (the formats this version has)."""
    variant = manifests["classification"].get("variant", "?")
    formats = ["TF Hub SavedModels", "Keras 3"]
    formats += [name for role, name in (("tflite", "LiteRT"), ("onnx", "ONNX")) if role in manifests["classification"]]
    return f"RepVGG-{variant}, fused for inference: {', '.join(formats)}"


def _provenance(manifests: dict) -> str:
    weights = manifests["classification"]["weights"]
    sha = weights.get("sha256")
    source = one_line(weights.get("source", "?"))
    return f"Weights: {source}" + (f" (sha256 {sha})" if sha else "") + "; converted and fused by repvgg-registry."


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()
