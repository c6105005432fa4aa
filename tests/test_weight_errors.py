"""Nothing loads silently wrong: every bad checkpoint gives one line naming the first bad key (or the
file problem), exit code 2 from the CLI, and no weight assigned. Also the `timm` source through the
real huggingface_hub download code, against a prepared local cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch_reference as ref
from safetensors.numpy import save_file as save_numpy
from typer.testing import CliRunner

from repvgg_registry.cli import app
from repvgg_registry.variants import build_model, get_variant
from repvgg_registry.variants.checkpoints import WeightsError
from repvgg_registry.variants.equivalence import sample_images
from repvgg_registry.variants.weights import load_weights

runner = CliRunner()


@pytest.fixture(scope="module")
def a0(tmp_path_factory):
    """A0 in timm naming (safetensors) with its state as numpy, and its reference logits."""
    root = tmp_path_factory.mktemp("a0")
    x = sample_images(2, 64, 64, seed=11)
    model = ref.timm_model(get_variant("A0"), [x], seed=11)
    path = ref.save_timm_safetensors(model, root / "a0.safetensors")
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    return {"root": root, "path": path, "state": state, "x": x, "logits": ref.logits(model, x)}


def _variant_of(state: dict, root: Path, name: str, **changes) -> Path:
    state = dict(state)
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            state.pop(key)
        else:
            state[key] = value
    path = root / f"{name}.safetensors"
    save_numpy(state, str(path))
    return path


def _load_error(path) -> str:
    model = build_model("A0", "train")
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(WeightsError) as err:
        load_weights(model, path)
    after = model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=False)), "weights changed before the error"
    message = str(err.value)
    assert "\n" not in message
    return message


def test_another_variants_checkpoint_is_named(tmp_path):
    x = sample_images(1, 64, 64)
    path = ref.save_timm_safetensors(ref.timm_model(get_variant("A1"), [x]), tmp_path / "a1.safetensors")
    message = _load_error(path)
    assert "is a RepVGG-A1 checkpoint, not RepVGG-A0" in message
    assert "'stem.conv_kxk.conv.weight' has shape [64, 3, 3, 3], expected [48, 3, 3, 3]" in message


def test_missing_key(a0):
    path = _variant_of(a0["state"], a0["root"], "missing", stages__1__2__identity__running_var=None)
    message = _load_error(path)
    assert "missing key 'stages.1.2.identity.running_var' (expected shape [96])" in message


def test_unexpected_key(a0):
    extra = np.ones(48, np.float32)
    path = _variant_of(a0["state"], a0["root"], "unexpected", stages__0__0__identity__weight=extra)
    assert "unexpected key 'stages.0.0.identity.weight' (shape [48])" in _load_error(path)


def test_wrong_shape(a0):
    bad = np.zeros((1000, 1000), np.float32)
    path = _variant_of(a0["state"], a0["root"], "shape", head__fc__weight=bad)
    assert "key 'head.fc.weight' has shape [1000, 1000], expected [1000, 1280]" in _load_error(path)


def test_nan_and_inf(a0):
    poisoned = a0["state"]["stages.2.3.conv_kxk.conv.weight"].copy()
    poisoned[0, 0, 1, 1] = np.nan
    path = _variant_of(a0["state"], a0["root"], "nan", stages__2__3__conv_kxk__conv__weight=poisoned)
    assert "key 'stages.2.3.conv_kxk.conv.weight' contains NaN or Inf" in _load_error(path)


def test_truncated_and_foreign_files(a0, tmp_path):
    data = Path(a0["path"]).read_bytes()
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    assert "cannot read checkpoint" in _load_error(truncated)
    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    assert "cannot read checkpoint" in _load_error(text)
    pth = tmp_path / "cut.pth"
    torch.save({k: torch.from_numpy(v) for k, v in a0["state"].items()}, str(pth))
    pth.write_bytes(pth.read_bytes()[:1000])
    assert "cannot read checkpoint" in _load_error(pth)
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], str(listing))
    assert "does not hold a state dict" in _load_error(listing)
    assert "checkpoint file not found" in _load_error(tmp_path / "nope.safetensors")
    other = tmp_path / "weights.h5"
    other.write_bytes(b"x")
    assert "unsupported checkpoint type '.h5'" in _load_error(other)
    foreign = tmp_path / "resnet.safetensors"
    save_numpy({"conv1.weight": np.zeros((8, 3, 3, 3), np.float32)}, str(foreign))
    assert "is not a RepVGG checkpoint" in _load_error(foreign)


def test_deploy_checkpoint_into_train_form_is_refused(a0, tmp_path):
    x = a0["x"]
    path = ref.save_timm_safetensors(ref.fused(ref.timm_model(get_variant("A0"), [x])), tmp_path / "d.safetensors")
    assert "deploy-form (fused) checkpoint" in _load_error(path)


def test_cli_exits_2_with_one_line_and_writes_nothing(a0, tmp_path):
    bad = _variant_of(a0["state"], a0["root"], "cli-missing", head__fc__bias=None)
    before = sorted(os.listdir(tmp_path))
    result = runner.invoke(app, ["check-fusion", "A0", "--weights", str(bad)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "missing key 'head.fc.bias'" in result.stderr
    assert sorted(os.listdir(tmp_path)) == before


def test_cli_check_fusion_with_a_real_checkpoint_and_inspect(a0):
    result = runner.invoke(app, ["check-fusion", "A0", "--weights", str(a0["path"]), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["weights"] == str(a0["path"])
    info = runner.invoke(app, ["inspect-weights", str(a0["path"]), "--json"])
    data = json.loads(info.stdout)
    assert (data["scheme"], data["form"], data["variant"], data["num_classes"]) == ("timm", "train", "A0", 1000)
    assert data["tensors"] == len([k for k in a0["state"] if not k.endswith("num_batches_tracked")])


def test_timm_has_no_g2_variants():
    result = runner.invoke(app, ["check-fusion", "B3g2", "--weights", "timm"])
    assert result.exit_code == 2
    assert "timm has no RepVGG-B3g2 weights" in result.stderr and "github.com/DingXiaoH/RepVGG" in result.stderr


def _run_python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env})


def test_pth_without_torch_names_the_extra(a0, tmp_path):
    pth = tmp_path / "a0.pth"
    torch.save({k: torch.from_numpy(v) for k, v in a0["state"].items()}, str(pth))
    code = (
        "import sys; sys.modules['torch'] = None\n"  # as if torch were not installed
        "from repvgg_registry.variants.checkpoints import read_state_dict, WeightsError\n"
        f"try:\n    read_state_dict({str(pth)!r})\nexcept WeightsError as e:\n    print(e)\n"
    )
    out = _run_python(code, {}).stdout
    assert "pip install 'repvgg-registry[torch]'" in out


def test_timm_source_through_huggingface_hub_cache(a0, tmp_path):
    """`--weights timm` goes through the real hf_hub_download, resolving from a prepared
    huggingface_hub cache with HF_HUB_OFFLINE=1 (no hub can be reached from here)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--timm--repvgg_a0.rvgg_in1k"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit / "model.safetensors").write_bytes(Path(a0["path"]).read_bytes())
    np.save(tmp_path / "x.npy", a0["x"])
    code = (
        "import numpy as np\n"
        "from repvgg_registry.variants import build_model\n"
        "m = build_model('A0', 'deploy', weights='timm')\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, np.asarray(m(np.load({str(tmp_path / 'x.npy')!r}))))\n"
    )
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    proc = _run_python(code, env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ours = np.load(tmp_path / "y.npy")
    assert np.abs(ours - a0["logits"]).max() <= 1e-4 * max(1.0, np.abs(a0["logits"]).max())

    empty = {"HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}
    cli = [sys.executable, "-m", "repvgg_registry.cli", "check-fusion", "A0", "--weights", "timm"]
    proc = subprocess.run(cli, capture_output=True, text=True, env={**os.environ, **empty})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "could not download timm/repvgg_a0.rvgg_in1k" in lines[0]
    assert "--weights PATH" in lines[0] and "--weights random" in lines[0]


# ----- dtypes, odd keys and hostile files: one honest line each (issue 11, D15, D22, D29) -------
def test_complex_tensor_is_refused_naming_the_key(a0, tmp_path):
    state = dict(a0["state"])
    state["stem.conv_kxk.conv.weight"] = state["stem.conv_kxk.conv.weight"].astype(np.complex64)
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, str(tmp_path / "complex.pth"))
    message = _load_error(tmp_path / "complex.pth")
    assert "stem.conv_kxk.conv.weight" in message and "complex64" in message
    save_numpy(
        {**a0["state"], "stem.conv_1x1.conv.weight": np.zeros((48, 3, 1, 1), np.int32)}, str(tmp_path / "i.safetensors")
    )
    message = _load_error(tmp_path / "i.safetensors")
    assert "stem.conv_1x1.conv.weight" in message and "int32" in message


def test_unexpected_head_key_is_refused(a0):
    bogus = _variant_of(a0["state"], a0["root"], "bogus-head", head__bogus=np.zeros(3, np.float32))
    assert "unexpected key 'head.bogus'" in _load_error(bogus)


def test_bf16_safetensors_load_upcast(a0, tmp_path):
    from safetensors.torch import save_file as save_torch

    from repvgg_registry.variants.checkpoints import read_state_dict

    state = {
        k: torch.from_numpy(v).to(torch.bfloat16) if v.dtype == np.float32 else torch.from_numpy(v)
        for k, v in a0["state"].items()
    }
    path = tmp_path / "bf16.safetensors"
    save_torch(state, str(path))
    read = read_state_dict(path)
    key = "stem.conv_kxk.conv.weight"
    assert read[key].dtype == np.float32
    np.testing.assert_array_equal(read[key], state[key].float().numpy())
    model = build_model("A0", "train")
    load_weights(model, path)  # loads, upcast


def test_non_string_key_and_sparse_tensor_are_one_line(a0, tmp_path):
    odd = tmp_path / "odd-key.pth"
    torch.save({**{k: torch.from_numpy(v) for k, v in a0["state"].items()}, 5: torch.zeros(2)}, str(odd))
    assert "key 5 is a int, not a string" in _load_error(odd)
    sparse = tmp_path / "sparse.pth"
    state = {k: torch.from_numpy(v) for k, v in a0["state"].items()}
    state["stem.conv_kxk.conv.weight"] = state["stem.conv_kxk.conv.weight"].reshape(48, -1).to_sparse()
    torch.save(state, str(sparse))
    assert "stem.conv_kxk.conv.weight" in _load_error(sparse) and "sparse" in _load_error(sparse)


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_with_code_is_refused_without_advice_to_unsafe_load(tmp_path):
    import pickle

    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as handle:
        pickle.dump({"stem.conv_kxk.conv.weight": _Payload()}, handle)
    message = _load_error(evil)
    assert "refused" in message and "could run code" in message
    assert "weights_only=False" not in message.replace("weights_only=True", "")
    result = runner.invoke(app, ["inspect-weights", str(evil)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "refused" in result.stderr


def test_inspect_weights_names_sources_that_are_not_files():
    result = runner.invoke(app, ["inspect-weights", "timm"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "weights sources for build, publish and check-fusion" in result.stderr
