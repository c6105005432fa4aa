"""The Hugging Face Hub as a hub: one repo per model, one commit and one tag per version.

``hf://my-org`` publishes RepVGG-B3g4 to ``my-org/repvgg-b3g4`` and a model published with
``--name digits`` to ``my-org/digits`` (:func:`repo_id_for`): each version is one commit holding
the whole staged release at the repo root (``feature_vector/``, ``classification/``,
``feature_maps/``, their ``.tar.gz`` archives, the four ``.keras`` files and every manifest: the
same bytes as the local hub's) and a ``README.md`` model card, and the tag ``v<N>`` on exactly that
commit. Versions are read from the tags; a version published before ``.keras`` files existed, or
built from a deploy-form source, has no ``train.manifest.json`` and so no ``train`` handle, and one
from before feature maps no ``feature_maps`` handle. The commit names its parent
(``parent_commit``), so two racing publishers cannot interleave, and a tag is never moved or reused:
a failure before the tag leaves no tag, and a rerun publishes cleanly.

Every call to the hub (here and the timm weights download) goes through :func:`hf_call`, which
fails fast, quietly and in one line:

* a host name that does not resolve, a refused connection or ``HF_HUB_OFFLINE`` fail at once
  (a retry cannot help within seconds);
* 5xx, 429 and timeouts are retried with exponential backoff, and no new try starts once the hub
  has been failing for ``deadline_s`` (``REPVGG_REGISTRY_HF_DEADLINE``, default 40 s);
* every connect, read and write waits at most ``timeout_s`` (``REPVGG_REGISTRY_HF_TIMEOUT``,
  default 20 s), so an endpoint that accepts and never answers cannot hang a command;
* huggingface_hub's own log lines and warnings are silenced for the duration of the call.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from ..errors import (
    HubError,
    HubUnreachableError,
    InvalidNameError,
    MissingTokenError,
    NameTakenError,
    NotPublishedError,
    VersionExistsError,
    first_line,
)
from ..hf_client import (
    NETWORK_FIX,
    _NoRetry,
    hf_call,
    hf_endpoint,
    is_offline,
    network_settings,
    offline_message,
    quiet_hf,
)
from ..publish.card import RANDOM_WEIGHTS_BANNER, markdown_text, yaml_header
from ..publish.int8 import QUANTIZATION_WARNING
from ..publish.release import ArtifactFiles, artifact_files, primary_record, read_staged
from ..publish.tasks import (
    ABSENT_IN_OLDER_VERSIONS,
    FEATURE_MAPS,
    RELEASE_TASKS,
    SERVING_TASKS,
    TASKS,
    TRAIN,
    output_width,
)
from .card_parts import (
    card_meta,
    custom_section,
    digest_rows,
    imagenet_head,
    markdown_digest,
    model_title,
    staged_labels,
)
from .hub import (
    DEFAULT_NAMESPACE,
    Handle,
    Hub,
    VersionInfo,
    hosted_name,
    shadowed_variant,
    validate_name,
    validate_version,
)

SCHEME = "hf://"
_TAG = re.compile(r"^v([1-9][0-9]*)$")
T = TypeVar("T")

#: Hugging Face's rule for user and organization names (huggingface_hub's ``validate_repo_id``)
HF_NAME_RULE = (
    "use letters, digits, '-', '_' and '.', not starting or ending with '-' or '.', without '--' or '..', "
    "at most 96 characters (Hugging Face's rule for user and organization names)"
)
_HF_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?")

#: What Hugging Face adds to the model name rule for a repo name (``validate_repo_id``)
HF_REPO_RULE = (
    "a Hugging Face repo name cannot end with '-', '.' or '.git' nor hold '--' or '..'; choose another --name"
)


# ----- the hub -----------------------------------------------------------------------------
def _hub_method(method: Callable[..., T]) -> Callable[..., T]:
    """Run a public method quietly under the hub's limits, refuse it at once under HF_HUB_OFFLINE, and
    turn the client's remaining HTTP errors (401, 403, 404, 412, ...) into one-line HubErrors."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        from huggingface_hub.errors import HfHubHTTPError

        with quiet_hf(self.network):
            if is_offline():
                raise HubUnreachableError(offline_message(self.location, self.api.endpoint))
            try:
                return method(self, *args, **kwargs)
            except HfHubHTTPError as exc:
                status = getattr(exc.response, "status_code", "?")
                first = first_line(exc)
                hint = (
                    "check HF_TOKEN's write access" if status in (401, 403) else "rerun, or check the repo on the hub"
                )
                raise HubError(f"Hugging Face Hub answered {status}: {first}; {hint}") from None
            except _NoRetry as exc:  # a call that did not go through hf_call
                raise HubUnreachableError(
                    f"Hugging Face Hub at {self.api.endpoint} did not answer: {exc.reason}; {NETWORK_FIX}"
                ) from None

    return wrapper


def validate_hf_namespace(namespace: str) -> str:
    """``namespace`` if Hugging Face accepts it as a user or organization name, else
    :class:`InvalidNameError` (before anything is built)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    ok = (
        isinstance(namespace, str)
        and _HF_NAME.fullmatch(namespace) is not None
        and "--" not in namespace
        and ".." not in namespace
    )
    if ok:
        try:
            validate_repo_id(f"{namespace}/repvgg-x")
        except HFValidationError:
            ok = False
    if not ok:
        raise InvalidNameError("Hugging Face namespace", namespace, HF_NAME_RULE)
    return namespace


def repo_id_for(namespace: str, model: str) -> str:
    """The Hugging Face repo of ``model``: ``<namespace>/<hosted name>`` (:func:`hosted_name`: reads,
    preflight and publish all ask there, so they cannot disagree)."""
    return f"{namespace}/{hosted_name(model)}"


class HuggingFaceHub(Hub):
    """Publishes to and reads from the Hugging Face Hub with the official ``huggingface_hub`` client.

    ``endpoint`` defaults to ``HF_ENDPOINT`` (else huggingface.co); the token to ``HF_TOKEN`` or
    the ``hf auth login`` token. ``namespace`` is checked against Hugging Face's name rule here.
    Calls fail fast, quietly and in one line (see :func:`hf_call`): ``retries`` tries more with
    backoff from ``backoff_s`` for 5xx, 429 and timeouts; ``timeout_s`` and ``deadline_s`` default
    to ``REPVGG_REGISTRY_HF_TIMEOUT`` / ``REPVGG_REGISTRY_HF_DEADLINE`` (20 s, 40 s).
    """

    def __init__(
        self,
        namespace: str,
        *,
        token: str | None = None,
        endpoint: str | None = None,
        private: bool = False,
        retries: int = 4,
        backoff_s: float = 1.0,
        timeout_s: float | None = None,
        deadline_s: float | None = None,
        handle_namespace: str = DEFAULT_NAMESPACE,
    ) -> None:
        from huggingface_hub import HfApi

        self.hf_namespace = validate_hf_namespace(namespace)
        self.namespace = validate_name(handle_namespace, "namespace")
        self.private = private
        self.retries = retries
        self.backoff_s = backoff_s
        self.network = network_settings(timeout_s, deadline_s)
        self.api = HfApi(endpoint=hf_endpoint(endpoint), token=token)
        self._token = token
        self._token_accepted = False

    def __repr__(self) -> str:
        return f"HuggingFaceHub({self.hf_namespace!r}, endpoint={self.api.endpoint!r})"

    @property
    def location(self) -> str:
        return f"{SCHEME}{self.hf_namespace}"

    # ----- plumbing ----------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one client call through :func:`hf_call` with this hub's endpoint and limits."""
        return hf_call(
            what,
            fn,
            endpoint=self.api.endpoint,
            retries=self.retries,
            backoff_s=self.backoff_s,
            settings=self.network,
        )

    def _repo(self, model: str) -> str:
        """The repo of ``model`` (:func:`repo_id_for`), or :class:`InvalidNameError` for a model name
        that our name rule allows and Hugging Face refuses (``a--b``, ``x.git``): the client would
        otherwise fail later with a bare ValueError."""
        from huggingface_hub.errors import HFValidationError
        from huggingface_hub.utils import validate_repo_id

        repo_id = repo_id_for(self.hf_namespace, model)
        try:
            validate_repo_id(repo_id)
        except HFValidationError:
            raise InvalidNameError("model name", model, HF_REPO_RULE) from None
        return repo_id

    def _writable_repo(self, model: str) -> str:
        """:meth:`_repo`, refusing a custom name that is a variant's repo name (``repvgg-a0``): it
        would land in RepVGG-A0's own repo, among the versions of another model."""
        repo_id = self._repo(model)
        shadowed = shadowed_variant(model)
        if shadowed is not None:
            raise InvalidNameError(
                "model name",
                model,
                f"on the Hugging Face Hub it would share {repo_id} with RepVGG-{shadowed}'s own releases; "
                "choose another --name",
            )
        return repo_id

    @_hub_method
    def check_can_publish(self, variant: str | None = None, version: int | None = None) -> None:
        """Everything that can refuse a publish, asked before any build work: a token exists, the
        hub answers and accepts it (``whoami``; 401 is "token rejected"), it is not read-only, and,
        with ``variant`` (a model name) and ``version``, that version's tag is free. The token is
        never shown."""
        from huggingface_hub import get_token
        from huggingface_hub.errors import HfHubHTTPError

        token = self._token or get_token()
        if not token:
            raise MissingTokenError(
                "no Hugging Face token: run 'hf auth login' or set HF_TOKEN (a token with write access), then rerun"
            )
        if not self._token_accepted:
            try:
                me = self._call("whoami", lambda: self.api.whoami(token=token))
            except HfHubHTTPError as exc:
                if getattr(exc.response, "status_code", None) != 401:
                    raise
                raise MissingTokenError(
                    f"Hugging Face token rejected by {self.api.endpoint} (401: {first_line(exc)}); set HF_TOKEN to "
                    "a valid token with write access or run 'hf auth login --force', then rerun"
                ) from None
            role = ((me.get("auth") or {}).get("accessToken") or {}).get("role") if isinstance(me, dict) else None
            if role == "read":
                raise MissingTokenError(
                    f"the Hugging Face token of {me.get('name', '?')} is read-only and cannot publish; set HF_TOKEN "
                    "to a token with write access or run 'hf auth login --force', then rerun"
                )
            self._token_accepted = True
        if variant is not None and version is not None:
            validate_version(version)
            repo_id = self._repo(variant)
            if version in self._tags(repo_id):
                raise VersionExistsError.taken(f"{repo_id} (tag v{version})", version)

    def preflight(self, model: str, *, version: int | None = None, base_variant: str | None = None) -> None:
        """:meth:`check_can_publish` for ``model`` and ``version``, before any build: the model name
        (one Hugging Face takes as a repo name, not a variant's repo), the token (exists, accepted by
        ``whoami``, not read-only), the hub (answers, not HF_HUB_OFFLINE), the ``v<version>`` tag
        (free) and, with ``base_variant`` (the table's name, e.g. ``A0``), that the name's published
        versions are of that base (else :class:`NameTakenError`). Reads the tags and one manifest,
        not every manifest: versions of one name are one model, which this check keeps true."""
        key = validate_name(model.lower(), "model name")
        validate_version(version)
        repo_id = self._writable_repo(key)
        self.check_can_publish(key, version)
        if base_variant is not None:
            published = self._published_base(repo_id)
            if published is not None and published != base_variant:
                raise NameTakenError(self.location, key, published, base_variant)

    # ----- reading -----------------------------------------------------------------------
    def _tags(self, repo_id: str) -> dict[int, str]:
        """``{N: commit}`` of the ``v<N>`` tags; {} if the repo does not exist."""
        from huggingface_hub.errors import RepositoryNotFoundError

        try:
            refs = self._call(f"list_repo_refs({repo_id})", lambda: self.api.list_repo_refs(repo_id))
        except RepositoryNotFoundError:
            return {}
        found = {}
        for tag in refs.tags:
            match = _TAG.match(tag.name)
            if match:
                found[int(match.group(1))] = tag.target_commit
        return found

    @_hub_method
    def _published_base(self, repo_id: str) -> str | None:
        """The base variant (manifest ``variant``) of the newest version in ``repo_id``; None when
        nothing is published there yet."""
        tags = self._tags(repo_id)
        if not tags:
            return None
        manifest = self._manifest(repo_id, TASKS[0], tags[max(tags)])
        return manifest.get("variant") if manifest else None

    def _manifest(self, repo_id: str, task: str, revision: str) -> dict | None:
        """The manifest of ``task`` at ``revision``; None for ``train`` or ``feature_maps`` at a version
        without one (see :data:`ABSENT_IN_OLDER_VERSIONS`), which is no error."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import RemoteEntryNotFoundError

        name = artifact_files(Path(task), task).manifest.name
        try:
            path = self._call(
                f"download of {name}",
                lambda: hf_hub_download(repo_id, name, revision=revision, endpoint=self.api.endpoint),
            )
        except RemoteEntryNotFoundError:
            if task not in ABSENT_IN_OLDER_VERSIONS:
                raise
            return None
        return json.loads(Path(path).read_text())

    def _info(self, repo_id: str, handle: Handle, manifest: dict) -> VersionInfo:
        """One ``versions`` row: the sha256 of what the handle fetches (:func:`primary_record`) and
        where it lives on the hub (the SavedModel folder, or ``train.keras``)."""
        files = artifact_files(Path(handle.task), handle.task)
        tag = f"v{handle.version}"
        where = f"tree/{tag}/{files.folder}" if files.folder is not None else f"blob/{tag}/{files.keras}"
        return VersionInfo(
            handle,
            manifest["created"],
            manifest["weights"]["source"],
            primary_record(manifest)["sha256"],
            f"{self.api.endpoint}/{repo_id}/{where}",
            manifest.get("variant"),
        )

    @_hub_method
    def versions(self, variant: str) -> list[VersionInfo]:
        """Every handle of the model ``variant`` (a variant's own name or a ``--name``), oldest
        version first, each with its base variant from the manifest."""
        key = variant.lower()
        repo_id = self._repo(key)
        rows = []
        for number, commit in sorted(self._tags(repo_id).items()):
            for task in RELEASE_TASKS:
                manifest = self._manifest(repo_id, task, commit)
                if manifest is not None:
                    rows.append(self._info(repo_id, Handle(self.namespace, key, task, number), manifest))
        return rows

    @_hub_method
    def artifact_files(self, handle: Handle) -> ArtifactFiles:
        """Downloads only the files of ``handle`` at its tag (``{task}/*``, ``{task}.tar.gz``,
        ``{task}.keras``, ``{task}.manifest.json``; for ``train`` the last two), not the whole
        release, and names them by the release's one naming rule."""
        from huggingface_hub import snapshot_download

        repo_id = self._repo(handle.variant)
        tag = f"v{handle.version}"
        tags = self._tags(repo_id)
        if handle.version not in tags:
            raise NotPublishedError(
                f"{repo_id} has no tag {tag}; see 'repvgg-registry versions --hub {self.location}'",
                handle=str(handle),
                available=tuple(sorted(tags)),
            )
        task = handle.task
        root = Path(
            self._call(
                f"snapshot_download({repo_id}, {tag})",
                lambda: snapshot_download(
                    repo_id,
                    revision=tag,
                    allow_patterns=_download_patterns(task),
                    endpoint=self.api.endpoint,
                ),
            )
        )
        files = artifact_files(root / task, task)
        if task in ABSENT_IN_OLDER_VERSIONS and not files.manifest.is_file():
            raise NotPublishedError(
                f"{repo_id} {tag} has no {files.manifest.name}: it was {ABSENT_IN_OLDER_VERSIONS[task]}, so it "
                f"has no {task} handle; see 'repvgg-registry versions --hub {self.location}'",
                handle=str(handle),
                available=tuple(sorted(tags)),
            )
        return files

    # ----- writing -----------------------------------------------------------------------
    @_hub_method
    def publish_staged(self, variant: str, staged: Path, *, version: int | None = None) -> list[VersionInfo]:
        """Publish ``staged`` as the next (or the given) version of the model ``variant`` (a variant's
        own name or a ``--name``) in its repo (:func:`repo_id_for`): one commit, then its tag."""
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete
        from huggingface_hub.errors import HfHubHTTPError

        key = validate_name(variant.lower(), "model name")
        repo_id = self._writable_repo(key)
        manifests = read_staged(staged)  # before anything reaches the hub
        labels = staged_labels(staged)
        self._call(
            f"create_repo({repo_id})",
            lambda: self.api.create_repo(repo_id, private=self.private, exist_ok=True),
        )
        tags = self._tags(repo_id)
        if version is None:
            version = max(tags, default=0) + 1
        elif version in tags:
            raise VersionExistsError.taken(f"{repo_id} (tag v{version})", version)
        info = self._call(f"repo_info({repo_id})", lambda: self.api.repo_info(repo_id))
        parent = info.sha
        existing = {s.rfilename for s in (info.siblings or [])}
        card = repo_card(key, version, manifests, repo_id, self.api.endpoint, labels=labels)

        files = {p.relative_to(staged).as_posix(): p for p in sorted(staged.rglob("*")) if p.is_file()}
        operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(p)) for rel, p in files.items()]
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode()))
        stale = sorted(p for p in existing if p not in files and p not in ("README.md", ".gitattributes"))
        operations += [CommitOperationDelete(path_in_repo=p) for p in stale]
        commit = self._call(
            f"create_commit({repo_id})",
            lambda: self.api.create_commit(
                repo_id,
                operations=operations,
                commit_message=f"{model_title(key, manifests)} v{version}",
                commit_description="Published by repvgg-registry.",
                parent_commit=parent,
            ),
        )
        try:
            self._call(
                f"create_tag(v{version})",
                lambda: self.api.create_tag(repo_id, tag=f"v{version}", revision=commit.oid, tag_message=f"v{version}"),
            )
        except HfHubHTTPError as exc:
            if getattr(exc.response, "status_code", None) == 409:
                raise VersionExistsError(
                    f"{repo_id} tag v{version} was created by another publisher meanwhile; rerun to publish the next",
                    where=repo_id,
                    version=version,
                ) from None
            raise HubError(
                f"could not tag {repo_id} v{version}: {first_line(exc)}; rerun (an untagged commit is no version)"
            ) from None
        return [self._info(repo_id, Handle(self.namespace, key, task, version), manifests[task]) for task in manifests]


def _download_patterns(task: str) -> list[str]:
    """``snapshot_download`` patterns for exactly the files of one artifact at the repo root."""
    files = artifact_files(Path(task), task)
    patterns = [f"{files.folder}/*"] if files.folder is not None else []
    return patterns + [path.as_posix() for role, path in files.roles().items() if role != "folder"]


# ----- the model card ----------------------------------------------------------------------
def _deploy_bullets(manifests: dict[str, dict]) -> str:
    """The card's lines on the deployment files this version has (none: nothing)."""

    def named(role: str) -> str:
        return ", ".join(f"`{manifests[t][role]['name']}`" for t in TASKS if role in manifests.get(t, {}))

    lines = []
    if named("tflite"):
        lines.append(f"* LiteRT fp32 ({named('tflite')}): `ai_edge_litert.interpreter.Interpreter`, input `images`")
    if named("tflite_int8"):
        lines.append(
            f"* LiteRT int8 ({named('tflite_int8')}), float input and output; its agreement with fp32 is in each\n"
            "  task's `metadata.json` (`deploy.tflite_int8`). " + QUANTIZATION_WARNING
        )
    if named("onnx"):
        lines.append(f"* ONNX opset 17, NHWC input `images` ({named('onnx')}): onnxruntime, OpenVINO, TensorRT")
    serving = ", ".join(f"`{t}/`" for t in SERVING_TASKS if t in manifests)
    if serving:
        lines.append(f"* inference-only SavedModels, weights as graph constants, for TF Serving ({serving})")
    if not lines:
        return ""
    intro = "Deployment files, converted from the SavedModels and checked against them in the build:\n\n"
    return intro + "\n".join(lines) + "\n\n"


def _front_matter(base: str, imagenet_head: bool) -> str:
    """:func:`yaml_header` for the repo, without ``datasets: imagenet-1k`` for a head that is not
    ImageNet-1k's: its training data is the user's, which the card cannot name."""
    header = yaml_header(
        {"task": "classification", "license": "MIT"},
        extra_tags=("feature-extraction", "keras", f"repvgg-{base.lower()}"),
    )
    if imagenet_head:
        return header
    kept: list[str] = []
    in_datasets = False
    for line in header.splitlines():
        if line == "datasets:":
            in_datasets = True
        elif not (in_datasets and line.startswith("- ")):
            in_datasets = False
            kept.append(line)
    return "\n".join(kept) + "\n"


def _logits_bullet(output: dict) -> str:
    """The card's ``classification.keras`` line: ImageNet-1k's 1000 classes, or the custom head's
    own count and the labels file that names them (never a claim of ImageNet-1k for it)."""
    if imagenet_head(output):
        return (
            "* `classification.keras`: the fused network with its head -> logits `[batch, 1000]` (ImageNet-1k,\n"
            "  no background class)"
        )
    source = markdown_text(output.get("labels_source", "-"))
    classes = output.get("num_classes", "N")
    return (
        f"* `classification.keras`: the fused network with its head -> logits `[batch, {classes}]`,\n"
        f"  one per class of {source} (not ImageNet-1k), named line by line in `classification/assets/labels.txt`"
    )


def _feature_maps_bullet(manifests: dict) -> str:
    """The ``feature_maps.keras`` line: the five maps' keys and channels (and the output stride),
    or nothing for a release published before feature maps existed."""
    output = (manifests.get(FEATURE_MAPS) or {}).get("output") or {}
    if not output.get("maps"):
        return ""
    maps = ", ".join(f"`{m['key']}` {m['channels']}" for m in output["maps"])
    stride = output.get("output_stride", 32)
    return (
        f"* `feature_maps.keras`: the same network's multi-scale maps, a dict ({maps} channels;"
        f" output stride {stride}) for FPN, YOLO or segmentation necks"
    )


def _train_bullet(has_train: bool) -> str:
    """The card's ``train.keras`` line, or, for a deploy-form source, that there is none."""
    if has_train:
        return "* `train.keras`: the multi-branch train form with the same head: fine-tune this one, then fuse it"
    return (
        "* no train form: this model was built from a deploy-form (fused) source, so no `train.keras`\n"
        "  ships with it; fine-tune the fused `.keras` files above"
    )


def _fine_tune(repo_id: str, tag: str, has_train: bool) -> str:
    """The fine-tuning snippet: the train form, fused afterwards, or (no train form) the fused
    classifier itself."""
    if has_train:
        return f"""To fine-tune, train the train form (any Keras optimizer, Adam included), then fuse it into one
3x3 conv per block:

```python
from repvgg_registry.variants import fuse
train = keras.saving.load_model(hf_hub_download("{repo_id}", "train.keras", revision="{tag}"))
# train.fit(...)
deploy = fuse(train)   # same outputs in inference mode
```"""
    return f"""This model has no train form (it was built from a deploy-form source): fine-tune the fused
network itself (any Keras optimizer, Adam included):

```python
model = keras.saving.load_model(hf_hub_download("{repo_id}", "classification.keras", revision="{tag}"))
# model.fit(...)
```"""


def repo_card(
    variant: str,
    version: int,
    manifests: dict[str, dict],
    repo_id: str,
    endpoint: str,
    *,
    labels: Sequence[str] = (),
) -> str:
    """The repo's README.md: front matter, numbers, provenance and copy-paste snippets, the Keras 3
    ``.keras`` route first (it is the one that loads and fine-tunes in Keras 3), pinned to the
    version's tag through ``hf_hub_download``: ``keras.saving.load_model("hf://...")`` always loads
    ``main`` and cannot pin one. Values that come from outside (the weights file's name, the
    labels) are escaped; random weights get a banner.

    ``variant`` is the model name. A custom model (a ``--name`` of its own, or a head that is not
    ImageNet-1k's) is titled by its name and base variant and says what it is (``labels``: its
    class names, the first few shown); its logits line gives its own class count and labels source,
    and its front matter claims no ImageNet-1k data. A release without ``train`` (a deploy-form
    source) offers no ``train.keras``."""
    meta = card_meta(variant, manifests)
    output = meta["output"]
    has_train = TRAIN in manifests
    weights = manifests["classification"]["weights"]
    header = _front_matter(meta["base_variant"], imagenet_head(output))
    tag = f"v{version}"
    width = output_width(manifests["feature_vector"].get("output") or {}) or "N"
    random_weights = any(m.get("weights", {}).get("source") == "random" for m in manifests.values())
    banner = f"\n> **Warning: {RANDOM_WEIGHTS_BANNER}.**\n" if random_weights else ""
    return f"""{header}
# {model_title(variant, manifests, markdown_text)} for Keras 3 and TensorFlow / TF Hub
{banner}{custom_section(meta, labels)}
Published by repvgg-registry. Every model takes images float32 `[batch, height, width, 3]` in
[0, 1], of any size, and normalises them (ImageNet mean/std) inside.

Keras 3 (`keras.saving.load_model`, no custom objects, the default `safe_mode`):

* `feature_vector.keras`: the fused (deploy-form) network -> `[batch, {width}]` features
{_logits_bullet(output)}
{_feature_maps_bullet(manifests)}
{_train_bullet(has_train)}

TF Hub Reusable SavedModels of the same fused network (tf_keras and `tensorflow_hub`):

* `feature_vector/`, `classification/` (labels in `classification/assets/labels.txt`),
  `feature_maps/` (a dict of five maps for detection and segmentation necks), each with its own
  `metadata.json` (params, GMACs, fusion check) and model card; `<task>.tar.gz` is the TF Hub
  archive

{_deploy_bullets(manifests)}`<task>.manifest.json` lists the sha256 of every file of the artifact.

| | |
|---|---|
| version | {tag} |
| weights | {markdown_text(weights["source"])} (sha256 {markdown_digest(weights.get("sha256"))}) |
{digest_rows(manifests)}

## Use

Keras 3, pinned to this version:

```python
import keras
from huggingface_hub import hf_hub_download
path = hf_hub_download("{repo_id}", "feature_vector.keras", revision="{tag}")
backbone = keras.saving.load_model(path)   # images in [0, 1], any size -> [batch, {width}]
```

`keras.saving.load_model("hf://{repo_id}")` always loads `main` and cannot pin a tag, hence
`hf_hub_download(..., revision="{tag}")`.

{_fine_tune(repo_id, tag, has_train)}

tf_keras with `tensorflow_hub` (fine-tunable with `trainable=True`):

```python
import huggingface_hub, tensorflow_hub as hub
path = huggingface_hub.snapshot_download("{repo_id}", revision="{tag}")
backbone = hub.KerasLayer(path + "/feature_vector", trainable=True)
```

Straight from a URL (tensorflow_hub downloads and caches the archive):

```python
backbone = hub.KerasLayer("{endpoint}/{repo_id}/resolve/{tag}/feature_vector.tar.gz")
```

The SavedModel in Keras 3 (inference; fine-tuning through `TFSMLayer` needs an SGD-style optimizer
in Keras 3.15, Adam fails with `'<name>:0_momentum' is not a valid scope name`: fine-tune the
`.keras` files instead):

```python
import keras
layer = keras.layers.TFSMLayer(path + "/classification", call_endpoint="serving_default")
```

Versions are git tags (`v1`, `v2`, ...) and are never moved: pin `revision="{tag}"`.
"""
