"""Reading RepVGG checkpoints into plain numpy state dicts, and making sense of their keys.

Knows both key schemes (the authors' ``stage0.rbr_dense...`` and timm's ``stem.conv_kxk...``)
and both forms (train with branches, deploy with ``rbr_reparam`` / ``reparam_conv``), and which
tensors with which shapes a variant expects. Everything is normalised to timm's naming, which the
Keras loader reads. No TensorFlow here; torch only for ``.pth``/``.pt``/``.bin`` files.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import WeightsError, first_line
from .table import OFFICIAL_RELEASE_URL, VARIANTS, LayerPlan, VariantSpec

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"
TIMM_PRETRAINED_TAG = "rvgg_in1k"

# (official regex, timm replacement) applied in order; every rule is a whole key component.
_OFFICIAL_TO_TIMM: tuple[tuple[str, str], ...] = (
    (r"^stage0\.", "stem."),
    (r"^linear\.", "head.fc."),
    (r"\.rbr_dense\.", ".conv_kxk."),
    (r"\.rbr_1x1\.", ".conv_1x1."),
    (r"\.rbr_identity\.", ".identity."),
    (r"\.rbr_reparam\.", ".reparam_conv."),
    (r"\.se\.down\.", ".attn.fc1."),
    (r"\.se\.up\.", ".attn.fc2."),
)
_OFFICIAL_STAGE = re.compile(r"^stage([1-4])\.(\d+)\.")
_IGNORED_SUFFIX = "num_batches_tracked"
_BN_PARAMS = ("weight", "bias", "running_mean", "running_var")
_HEAD_KEYS = ("head.fc.weight", "head.fc.bias")


@dataclass(frozen=True)
class Checkpoint:
    """A state dict in timm naming, with where it came from and what it is."""

    tensors: dict[str, np.ndarray]
    scheme: str  # "official" or "timm"
    form: str  # "train" or "deploy"
    source: str
    original_keys: dict[str, str]  # timm-named key -> key as written in the file

    def display_key(self, key: str) -> str:
        """The key as the user's file spells it, for error messages."""
        return self.original_keys.get(key, key)


def official_to_timm_key(key: str) -> str:
    key = _OFFICIAL_STAGE.sub(lambda m: f"stages.{int(m.group(1)) - 1}.{m.group(2)}.", key)
    for pattern, replacement in _OFFICIAL_TO_TIMM:
        key = re.sub(pattern, replacement, key)
    return key


def block_prefix(plan: LayerPlan) -> str:
    """timm's module path of a block: ``stem`` or ``stages.<stage-1>.<block>``."""
    return "stem" if plan.stage == 0 else f"stages.{plan.stage - 1}.{plan.block}"


def expected_shapes(
    spec: VariantSpec, form: str, *, include_top: bool = True, num_classes: int | None = None
) -> dict[str, tuple[int, ...]]:
    """Every tensor a checkpoint of ``spec`` in ``form`` holds, in timm naming and PyTorch layout."""
    shapes: dict[str, tuple[int, ...]] = {}
    for plan in spec.layers():
        prefix = block_prefix(plan)
        cin, cout = plan.in_channels // plan.groups, plan.out_channels
        if form == "deploy":
            shapes[f"{prefix}.reparam_conv.weight"] = (cout, cin, 3, 3)
            shapes[f"{prefix}.reparam_conv.bias"] = (cout,)
        else:
            for branch, k in (("conv_kxk", 3), ("conv_1x1", 1)):
                shapes[f"{prefix}.{branch}.conv.weight"] = (cout, cin, k, k)
                shapes.update({f"{prefix}.{branch}.bn.{p}": (cout,) for p in _BN_PARAMS})
            if plan.has_identity:
                shapes.update({f"{prefix}.identity.{p}": (cout,) for p in _BN_PARAMS})
        if plan.se_channels:
            r = plan.se_channels
            shapes[f"{prefix}.attn.fc1.weight"] = (r, cout, 1, 1)
            shapes[f"{prefix}.attn.fc1.bias"] = (r,)
            shapes[f"{prefix}.attn.fc2.weight"] = (cout, r, 1, 1)
            shapes[f"{prefix}.attn.fc2.bias"] = (cout,)
    if include_top:
        classes = spec.num_classes if num_classes is None else num_classes
        shapes["head.fc.weight"] = (classes, spec.num_features)
        shapes["head.fc.bias"] = (classes,)
    return shapes


def _unwrap(obj, source: str) -> dict:
    """Accept ``{'state_dict': ...}`` / ``{'model': ...}`` wrappers around the tensors."""
    for _ in range(3):
        if isinstance(obj, dict):
            for wrapper in ("state_dict", "model", "model_state_dict"):
                if wrapper in obj and isinstance(obj[wrapper], dict):
                    obj = obj[wrapper]
                    break
            else:
                return obj
    if not isinstance(obj, dict):
        raise WeightsError(f"{source} does not hold a state dict (found {type(obj).__name__}); save model.state_dict()")
    return obj


def _torch_refusal(path: Path, exc: Exception) -> WeightsError:
    """One honest line for what ``torch.load(weights_only=True)`` refused. torch's own message for
    a pickle with code in it starts with advice to retry with ``weights_only=False``, which is the
    one thing not to do with a file from elsewhere."""
    text = str(exc)
    if "Weights only load failed" in text or "weights_only" in text:
        return WeightsError(
            f"refused {path}: it holds pickled Python objects besides tensors, which could run code when loaded; "
            "repvgg-registry never loads those (weights_only=True): re-save model.state_dict() as .safetensors "
            "from an environment you trust"
        )
    return WeightsError(f"cannot read checkpoint {path}: {first_line(exc)} (truncated or not a PyTorch file?)")


def _read_torch(path: Path) -> dict:
    try:
        import torch
    except ImportError:
        raise WeightsError(
            f"reading {path.suffix} checkpoints needs PyTorch; install it with "
            "pip install 'repvgg-registry[torch]', or convert the file to .safetensors"
        ) from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated / foreign / malicious files
        raise _torch_refusal(path, exc) from None
    state = _unwrap(obj, str(path))
    tensors = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise WeightsError(f"{path}: key {key!r} is a {type(key).__name__}, not a string; save model.state_dict()")
        if not isinstance(value, torch.Tensor):
            continue
        if value.layout != torch.strided:
            raise WeightsError(
                f"{path}: key '{key}' is a {value.layout} tensor; save dense tensors (tensor.to_dense())"
            )
        if value.is_complex():
            raise WeightsError(f"{path}: key '{key}' has dtype {value.dtype}; RepVGG weights are real-valued")
        tensors[key] = value.detach().cpu().float().numpy() if value.is_floating_point() else value.numpy()
    return tensors


#: safetensors dtypes numpy cannot hold natively, upcast on reading: bf16 is common on the HF Hub.
_UPCAST = {"BF16"}
_UPCAST_NAMES = {"bfloat16"}


def _read_bf16_safetensors(path: Path) -> dict:
    """Read a safetensors file holding bf16 tensors (numpy has no bfloat16): the header is JSON,
    each bf16 value is the top half of a float32."""
    numpy_dtypes = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}
    header, offset = _safetensors_header(path)
    body = memoryview(path.read_bytes())[offset:]
    tensors = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = body[start:end]
        if info["dtype"] == "BF16":
            halves = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            array = halves.view(np.float32)
        elif info["dtype"] in numpy_dtypes:
            array = np.frombuffer(raw, dtype=numpy_dtypes[info["dtype"]])
        else:
            raise WeightsError(f"{path}: key '{key}' has dtype {info['dtype']}; RepVGG weights are real floating point")
        tensors[key] = array.reshape(info["shape"]).copy()
    return tensors


def _read_safetensors(path: Path) -> dict:
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except Exception as exc:
        error = exc
    else:  # with ml_dtypes loaded (TensorFlow brings it), bf16 arrives as a numpy bfloat16: upcast
        return {k: v.astype(np.float32) if v.dtype.name in _UPCAST_NAMES else v for k, v in tensors.items()}
    try:
        header, _ = _safetensors_header(path)
        upcast = bool(_UPCAST & {info["dtype"] for key, info in header.items() if key != "__metadata__"})
    except Exception:  # not even a header: truncated or foreign
        upcast = False
    if upcast:
        return _read_bf16_safetensors(path)
    raise WeightsError(f"cannot read checkpoint {path}: {first_line(error)} (truncated or not a safetensors file?)")


def _safetensors_header(path: Path) -> tuple[dict, int]:
    """A safetensors file's JSON header and where its tensor data starts (8-byte length, then JSON)."""
    import json
    import struct

    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(length)), 8 + length


def existing_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it is a file; otherwise the one not-found error of every weights source."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint file not found: {path}; pass 'random', 'timm' or an existing path")
    return path


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Raw tensors of a checkpoint file, unwrapped and without a ``module.`` prefix."""
    path = existing_file(path)
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        raw = _read_safetensors(path)
    elif suffix in TORCH_SUFFIXES:
        raw = _read_torch(path)
    else:
        raise WeightsError(
            f"unsupported checkpoint type '{path.suffix}' for {path}; use .safetensors, .pth, .pt or .bin"
        )
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in raw.items()}


def classify(state: dict[str, np.ndarray], source: str) -> Checkpoint:
    """Detect scheme and form, and rename everything to timm's naming."""
    keys = [k for k in state if not k.endswith(_IGNORED_SUFFIX)]
    if any(k.startswith("stage0.") for k in keys):
        scheme = "official"
    elif any(k.startswith("stem.") for k in keys):
        scheme = "timm"
    else:
        sample = ", ".join(repr(k) for k in keys[:3]) or "no tensors"
        raise WeightsError(
            f"{source} is not a RepVGG checkpoint: no 'stage0.*' (official) or 'stem.*' (timm) keys; found {sample}"
        )
    tensors: dict[str, np.ndarray] = {}
    original: dict[str, str] = {}
    for key in keys:
        name = official_to_timm_key(key) if scheme == "official" else key
        tensor = np.asarray(state[key])
        if tensor.dtype.kind != "f":  # complex would lose its imaginary part, ints and bools mean a wrong file
            raise WeightsError(
                f"{source}: key '{key}' has dtype {tensor.dtype}; RepVGG weights are real floating-point tensors"
            )
        tensors[name] = tensor
        original[name] = key
    form = "deploy" if any(".reparam_conv." in k for k in tensors) else "train"
    return Checkpoint(tensors, scheme, form, source, original)


def mismatch(ckpt: Checkpoint, expected: dict[str, tuple[int, ...]]) -> str | None:
    """The first problem of ``ckpt`` against ``expected`` shapes, or None if it fits exactly."""
    for key, shape in expected.items():
        if key not in ckpt.tensors:
            return f"missing key '{ckpt.display_key(key)}' (expected shape {list(shape)})"
        found = tuple(ckpt.tensors[key].shape)
        if found != shape:
            return f"key '{ckpt.display_key(key)}' has shape {list(found)}, expected {list(shape)}"
    for key in ckpt.tensors:
        # a missing head is fine when none is expected (feature extractors); any other key is not
        if key not in expected and key not in _HEAD_KEYS:
            shape = list(ckpt.tensors[key].shape)
            return f"unexpected key '{ckpt.display_key(key)}' (shape {shape})"
    return None


def identify_variant(ckpt: Checkpoint) -> VariantSpec | None:
    """The variant whose shapes the checkpoint fits exactly (head of any size), if any."""
    head = ckpt.tensors.get("head.fc.weight")
    for spec in VARIANTS:
        classes = head.shape[0] if head is not None and head.ndim == 2 else None
        include_top = head is not None
        if mismatch(ckpt, expected_shapes(spec, ckpt.form, include_top=include_top, num_classes=classes)) is None:
            return spec
    return None


def validate(ckpt: Checkpoint, spec: VariantSpec, *, include_top: bool = True, num_classes: int | None = None) -> None:
    """Refuse anything that would load silently wrong: another variant, a missing, unexpected or
    misshapen key, NaN or Inf. The message names the first offending key."""
    expected = expected_shapes(spec, ckpt.form, include_top=include_top, num_classes=num_classes)
    problem = mismatch(ckpt, expected)
    if problem is not None:
        fits = identify_variant(ckpt)
        if fits is not None and fits.name != spec.name:
            raise WeightsError(f"{ckpt.source} is a {fits.display_name} checkpoint, not {spec.display_name}: {problem}")
        raise WeightsError(f"{ckpt.source} does not fit {spec.display_name} ({ckpt.form} form): {problem}")
    for key in expected:
        if not np.all(np.isfinite(ckpt.tensors[key])):
            raise WeightsError(f"{ckpt.source}: key '{ckpt.display_key(key)}' contains NaN or Inf values")


def timm_repo_id(spec: VariantSpec) -> str:
    if spec.timm_name is None:
        raise WeightsError(
            f"timm has no {spec.display_name} weights; download the official checkpoint "
            f"(RepVGG-{spec.name}-train.pth) from {OFFICIAL_RELEASE_URL} and pass --weights PATH"
        )
    return f"timm/{spec.timm_name}.{TIMM_PRETRAINED_TAG}"


def download_timm(spec: VariantSpec) -> Path:
    """``model.safetensors`` of the variant's timm model via huggingface_hub (honours
    ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and its cache). A cached file is used without asking the
    hub; otherwise the download fails fast, quietly and in one line (registry.huggingface.hf_call):
    no retry when the host does not resolve or refuses the connection, backoff for 5xx, 429 and
    timeouts, bounded by ``REPVGG_REGISTRY_HF_TIMEOUT`` / ``REPVGG_REGISTRY_HF_DEADLINE``."""
    repo_id = timm_repo_id(spec)
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    from ..errors import RegistryError
    from ..hf_client import hf_call, hf_endpoint, is_offline, quiet_hf

    what = f"{repo_id} (model.safetensors)"
    fix = "pass --weights PATH to a local checkpoint or --weights random"
    endpoint = hf_endpoint()
    with quiet_hf():
        try:
            return Path(hf_hub_download(repo_id, "model.safetensors", endpoint=endpoint, local_files_only=True))
        except Exception:  # not in the cache (or the cache unreadable): the download below tells
            pass
    if is_offline():
        raise WeightsError(
            f"could not download {what}: HF_HUB_OFFLINE is set and the file is not in the local cache "
            f"({constants.HF_HUB_CACHE}); unset HF_HUB_OFFLINE, or {fix}"
        )
    try:
        return Path(
            hf_call(
                f"the download of {what}",
                lambda: hf_hub_download(repo_id, "model.safetensors", endpoint=endpoint),
                endpoint=endpoint,
                fix=f"check the network or HF_ENDPOINT, or {fix}",
                error=WeightsError,
            )
        )
    except RegistryError:
        raise
    except LocalEntryNotFoundError as exc:  # the hub answered, but not as a Hugging Face Hub does
        reason = first_line(exc.__cause__ or exc)
    except (RepositoryNotFoundError, EntryNotFoundError):
        reason = "the hub has no such repository or file"
    except HfHubHTTPError as exc:
        reason = f"the hub answered {getattr(exc.response, 'status_code', '?')} ({first_line(exc)})"
    except Exception as exc:
        reason = first_line(exc)
    raise WeightsError(f"could not download {what} from {endpoint}: {reason}; {fix}")


def resolve(source: str | os.PathLike, spec: VariantSpec) -> Checkpoint:
    """Turn a weights source (``timm`` or a path) into a classified checkpoint."""
    path = download_timm(spec) if str(source) == "timm" else Path(source)
    return classify(read_state_dict(path), str(path))


@dataclass(frozen=True)
class CheckpointFacts:
    """What ``inspect-weights`` reports about a file, without TensorFlow."""

    path: str
    sha256: str
    scheme: str
    form: str
    variant: str | None
    tensors: int
    parameters: int
    num_classes: int | None

    def to_dict(self) -> dict:
        return asdict(self)

    def raise_if_unfit(self) -> None:
        if self.variant is None:
            raise WeightsError(
                f"{self.path} is a RepVGG {self.form}-form checkpoint ({self.scheme} keys) that fits no known variant"
            )


def inspect_checkpoint(path: str | os.PathLike) -> CheckpointFacts:
    """Scheme, form, the variant it fits, tensor and parameter counts, head size and sha256."""
    from ..hashing import sha256_file

    ckpt = classify(read_state_dict(path), str(path))
    spec = identify_variant(ckpt)
    head = ckpt.tensors.get("head.fc.weight")
    return CheckpointFacts(
        path=str(path),
        sha256=sha256_file(path),
        scheme=ckpt.scheme,
        form=ckpt.form,
        variant=spec.name if spec else None,
        tensors=len(ckpt.tensors),
        parameters=int(sum(t.size for k, t in ckpt.tensors.items() if "running_" not in k)),
        num_classes=int(head.shape[0]) if head is not None else None,
    )


def fetch_weights(source: str | os.PathLike | None, spec: VariantSpec) -> None:
    """What can fail about a weights source, asked before any TensorFlow work: the timm file is
    downloaded (into huggingface_hub's cache, where the build finds it), a path must exist."""
    if source is None or str(source) == "random":
        return
    if str(source) == "timm":
        download_timm(spec)
    else:
        existing_file(Path(source).expanduser())
