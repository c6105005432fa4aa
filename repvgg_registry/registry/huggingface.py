"""The Hugging Face Hub as a hub: one repo per variant, one commit and one tag per version.

``hf://my-org`` publishes RepVGG-B3g4 to ``my-org/repvgg-b3g4``: each version is one commit holding
``feature_vector/``, ``classification/``, their ``.tar.gz`` archives (the same bytes as the local
hub's), their manifests and a ``README.md`` model card, and the tag ``v<N>`` on exactly that commit.
Versions are read from the tags. The commit names its parent (``parent_commit``), so two racing
publishers cannot interleave, and a tag is never moved or reused: a failure before the tag leaves
no tag, and a rerun publishes cleanly.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..messages import first_line
from ..publish.card import yaml_header
from ..publish.release import archive_path, manifest_path
from .hub import (
    DEFAULT_NAMESPACE,
    TASKS,
    Handle,
    Hub,
    HubError,
    HubUnreachableError,
    MissingTokenError,
    NotPublishedError,
    VersionExistsError,
    VersionInfo,
)

SCHEME = "hf://"
_TAG = re.compile(r"^v([1-9][0-9]*)$")
T = TypeVar("T")


def _one_line_errors(method: Callable[..., T]) -> Callable[..., T]:
    """Turn the client's remaining HTTP errors (401, 403, 404, 412, ...) into one-line HubErrors."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        from huggingface_hub.errors import HfHubHTTPError

        try:
            return method(self, *args, **kwargs)
        except HfHubHTTPError as exc:
            status = getattr(exc.response, "status_code", "?")
            first = first_line(exc, 200)
            hint = "check HF_TOKEN's write access" if status in (401, 403) else "rerun, or check the repo on the hub"
            raise HubError(f"Hugging Face Hub answered {status}: {first}; {hint}") from None

    return wrapper


def repo_id_for(namespace: str, variant: str) -> str:
    return f"{namespace}/repvgg-{variant.lower()}"


class HuggingFaceHub(Hub):
    """Publishes to and reads from the Hugging Face Hub with the official ``huggingface_hub`` client.

    ``endpoint`` defaults to ``HF_ENDPOINT`` (else huggingface.co); the token to ``HF_TOKEN`` or
    the ``hf auth login`` token. Network errors are retried with exponential backoff.
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
        handle_namespace: str = DEFAULT_NAMESPACE,
    ) -> None:
        from huggingface_hub import HfApi

        self.hf_namespace = namespace
        self.namespace = handle_namespace
        self.private = private
        self.retries = retries
        self.backoff_s = backoff_s
        self.api = HfApi(endpoint=endpoint, token=token)
        self._token = token

    def __repr__(self) -> str:
        return f"HuggingFaceHub({self.hf_namespace!r}, endpoint={self.api.endpoint!r})"

    @property
    def location(self) -> str:
        return f"{SCHEME}{self.hf_namespace}"

    # ----- plumbing ----------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one client call, retrying network failures and 5xx with exponential backoff."""
        from huggingface_hub.errors import HfHubHTTPError

        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except HfHubHTTPError as exc:
                status = getattr(exc.response, "status_code", None)
                if status is not None and status < 500 and status != 429:
                    raise
                error: Exception = exc
            except OSError as exc:  # connection refused, DNS, timeouts
                error = exc
            except Exception as exc:
                if type(exc).__module__.startswith(("httpx", "httpcore", "requests", "urllib3")):
                    error = exc
                else:
                    raise
            if attempt < self.retries:
                time.sleep(delay)
                delay *= 2
        reason = first_line(error)
        raise HubUnreachableError(
            f"Hugging Face Hub at {self.api.endpoint} did not answer {what} after {self.retries + 1} tries "
            f"({reason}); check the network or HF_ENDPOINT and rerun"
        )

    def check_can_publish(self) -> None:
        from huggingface_hub import get_token

        if not (self._token or get_token()):
            raise MissingTokenError(
                "no Hugging Face token: run 'hf auth login' or set HF_TOKEN (a token with write access), then rerun"
            )

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

    def _manifest(self, repo_id: str, task: str, revision: str) -> dict:
        from huggingface_hub import hf_hub_download

        path = self._call(
            f"download of {task}.manifest.json",
            lambda: hf_hub_download(repo_id, f"{task}.manifest.json", revision=revision, endpoint=self.api.endpoint),
        )
        return json.loads(Path(path).read_text())

    @_one_line_errors
    def versions(self, variant: str) -> list[VersionInfo]:
        repo_id = repo_id_for(self.hf_namespace, variant)
        rows = []
        for number, commit in sorted(self._tags(repo_id).items()):
            for task in TASKS:
                manifest = self._manifest(repo_id, task, commit)
                rows.append(
                    VersionInfo(
                        Handle(self.namespace, variant.lower(), task, number),
                        manifest["created"],
                        manifest["weights"]["source"],
                        manifest["archive"]["sha256"],
                        f"{self.api.endpoint}/{repo_id}/tree/v{number}/{task}",
                    )
                )
        return rows

    @_one_line_errors
    def artifact_files(self, handle: Handle) -> tuple[Path, Path, Path]:
        from huggingface_hub import snapshot_download

        repo_id = repo_id_for(self.hf_namespace, handle.variant)
        tag = f"v{handle.version}"
        if handle.version not in self._tags(repo_id):
            raise NotPublishedError(f"{repo_id} has no tag {tag}; see 'repvgg-registry versions --hub {self.location}'")
        task = handle.task
        root = Path(
            self._call(
                f"snapshot_download({repo_id}, {tag})",
                lambda: snapshot_download(
                    repo_id,
                    revision=tag,
                    allow_patterns=[f"{task}/*", f"{task}.tar.gz", f"{task}.manifest.json"],
                    endpoint=self.api.endpoint,
                ),
            )
        )
        return root / task, archive_path(root, task), manifest_path(root, task)

    # ----- writing -----------------------------------------------------------------------
    @_one_line_errors
    def publish_staged(self, variant: str, staged: Path, *, version: int | None = None) -> list[VersionInfo]:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        key = variant.lower()
        repo_id = repo_id_for(self.hf_namespace, key)
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
        manifests = {task: json.loads(manifest_path(staged, task).read_text()) for task in TASKS}
        card = repo_card(key, version, manifests, repo_id, self.api.endpoint)

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
                commit_message=f"RepVGG-{key} v{version}",
                commit_description="Published by repvgg-registry.",
                parent_commit=parent,
            ),
        )
        from huggingface_hub.errors import HfHubHTTPError

        try:
            self._call(
                f"create_tag(v{version})",
                lambda: self.api.create_tag(repo_id, tag=f"v{version}", revision=commit.oid, tag_message=f"v{version}"),
            )
        except HfHubHTTPError as exc:
            if getattr(exc.response, "status_code", None) == 409:
                raise VersionExistsError(
                    f"{repo_id} tag v{version} was created by another publisher meanwhile; rerun to publish the next"
                ) from None
            raise HubError(f"could not tag {repo_id} v{version}: {first_line(exc)}") from None
        return [
            VersionInfo(
                Handle(self.namespace, key, task, version),
                manifests[task]["created"],
                manifests[task]["weights"]["source"],
                manifests[task]["archive"]["sha256"],
                f"{self.api.endpoint}/{repo_id}/tree/v{version}/{task}",
            )
            for task in TASKS
        ]


def repo_card(variant: str, version: int, manifests: dict[str, dict], repo_id: str, endpoint: str) -> str:
    """The repo's README.md: front matter, numbers, provenance and copy-paste snippets."""
    meta = json.loads(json.dumps(manifests["classification"]))
    weights = meta["weights"]
    header = yaml_header(
        {"task": "classification", "license": "MIT"},
        extra_tags=("feature-extraction", f"repvgg-{variant}"),
    )
    tag = f"v{version}"
    return f"""{header}
# RepVGG-{variant.upper() if len(variant) <= 2 else variant} (fused) for TensorFlow / TF Hub

Two TF Hub Reusable SavedModels of the fused (deploy-form) network, published by repvgg-registry:

* `feature_vector/`: images float32 `[batch, height, width, 3]` in [0, 1] -> `feature_vector`
* `classification/`: the same input -> `logits` `[batch, 1000]` (ImageNet-1k, no background class;
  labels in `classification/assets/labels.txt`)

Normalisation (ImageNet mean/std) happens inside the models. Each folder has its own
`metadata.json` (params, GMACs, fusion check) and model card; `<task>.tar.gz` is the TF Hub archive
and `<task>.manifest.json` lists every file's sha256.

| | |
|---|---|
| version | {tag} |
| weights | {weights["source"]} (sha256 `{weights.get("sha256") or "-"}`) |
| feature_vector.tar.gz sha256 | `{manifests["feature_vector"]["archive"]["sha256"]}` |
| classification.tar.gz sha256 | `{manifests["classification"]["archive"]["sha256"]}` |

## Use

```python
import huggingface_hub, tensorflow_hub as hub
path = huggingface_hub.snapshot_download("{repo_id}", revision="{tag}")
backbone = hub.KerasLayer(path + "/feature_vector", trainable=True)
```

Straight from a URL (tensorflow_hub downloads and caches the archive):

```python
backbone = hub.KerasLayer("{endpoint}/{repo_id}/resolve/{tag}/feature_vector.tar.gz")
```

Keras 3:

```python
import keras
layer = keras.layers.TFSMLayer(path + "/classification", call_endpoint="serving_default")
```

Versions are git tags (`v1`, `v2`, ...) and are never moved: pin `revision="{tag}"`.
"""
