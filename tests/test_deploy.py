"""The deployment files (LiteRT, ONNX, inference-only SavedModels): converted from the checked
SavedModels in one real build, proven against timm in their own runtimes (ai-edge-litert,
onnxruntime), published to a local hub, served over real HTTP, verified, and refused with one
line when a conversion misses its bound."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub
import tf_keras
import torch_reference as ref
from typer.testing import CliRunner

from repvgg_registry.cli import app
from repvgg_registry.hashing import sha256_file
from repvgg_registry.publish import deploy, formats
from repvgg_registry.publish.build import BuildError, build_artifacts, check_sizes
from repvgg_registry.publish.deploy import onnx_runner, savedmodel_runner, tflite_runner
from repvgg_registry.publish.formats import DEPLOY_FORMATS, FORMATS_ENV, resolve_formats
from repvgg_registry.publish.release import stage_release
from repvgg_registry.publish.tasks import FEATURE_MAPS, OUTPUT_KEYS, SERVING_TASKS, TASKS
from repvgg_registry.registry import LocalHub
from repvgg_registry.registry.hub import Handle
from repvgg_registry.registry.operations import verify
from repvgg_registry.registry.server import serve_in_thread
from repvgg_registry.variants import get_variant
from repvgg_registry.variants.equivalence import compare_outputs, sample_images

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


@pytest.fixture(scope="module")
def timm_a0(tmp_path_factory):
    """timm's A0 with random weights and randomised BN statistics, and its checkpoint."""
    x = np.clip(sample_images(2, 224, 224, seed=2) * 0.25 + 0.5, 0, 1)
    model = ref.timm_model(get_variant("A0"), [(x - MEAN) / STD], seed=5)
    path = ref.save_timm_safetensors(model, tmp_path_factory.mktemp("weights") / "a0.safetensors")
    return model, path


@pytest.fixture(scope="module")
def built(timm_a0, tmp_path_factory):
    """One build with every deployment format (what a user gets by default)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(FORMATS_ENV, raising=False)
        return build_artifacts("A0", tmp_path_factory.mktemp("build") / "a0", weights=str(timm_a0[1]))


@pytest.fixture(scope="module")
def published(built, tmp_path_factory):
    """That build published as version 1 of a local hub, and served on 127.0.0.1."""
    root = tmp_path_factory.mktemp("hub")
    staged = root.parent / "staged"
    shutil.copytree(built.out_dir, staged)
    stage_release(staged)
    local = LocalHub(root)
    handles = [str(v.handle) for v in local.publish_staged("a0", staged)]
    server, url = serve_in_thread(local, log=lambda line: None)
    yield local, url, handles
    server.shutdown()


def _images(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((2, height, width, 3), dtype=np.float32)


def test_every_task_has_its_deployment_files_checked_in_the_build(built):
    names = {p.name for p in built.out_dir.iterdir()}
    for task in TASKS:
        assert {f"{task}.tflite", f"{task}.onnx", f"{task}-serving"} <= names
        meta = json.loads((built.out_dir / task / "metadata.json").read_text())
        for fmt in DEPLOY_FORMATS:
            record = meta["deploy"][fmt]  # its bound is relative to the output's size: checked below
            assert record["rtol"] == deploy.DEPLOY_RTOL[fmt] and 0 <= record["max_abs_diff"] < 1, (task, fmt, record)
        assert {"tensorflow", "ai_edge_litert", "tf2onnx", "onnxruntime"} <= set(meta["deploy"]["runtimes"])
        card = (built.out_dir / task / "README.md").read_text()
        assert "## Deployment files" in card and f"{task}.tflite" in card and f"{task}.onnx" in card
    assert list(built.timings) == ["build", "weights", "fuse", "export", "convert", "check"]


@pytest.mark.parametrize("size", [(224, 224), (168, 224)])
def test_litert_and_onnx_logits_match_timm(built, timm_a0, size):
    """The hardest reference: timm's fused PyTorch model, not our own SavedModel."""
    images = _images(*size, seed=3)
    expected = ref.logits(ref.fused(timm_a0[0]), (images - MEAN) / STD)
    for run in (
        tflite_runner(built.out_dir / "classification.tflite"),
        onnx_runner(built.out_dir / "classification.onnx"),
    ):
        diff, _, tol = compare_outputs(expected, run(images)["logits"], rtol=1e-4)
        assert diff <= tol, (size, diff)


def test_converted_feature_maps_keep_every_key_and_shape(built):
    images = _images(160, 128, seed=4)
    reference = savedmodel_runner(built.out_dir / FEATURE_MAPS)(images)
    assert list(reference) != [] and set(reference) == set(OUTPUT_KEYS[FEATURE_MAPS])
    for run in (tflite_runner(built.out_dir / "feature_maps.tflite"), onnx_runner(built.out_dir / "feature_maps.onnx")):
        got = run(images)
        assert set(got) == set(reference)
        for key, value in reference.items():
            assert got[key].shape == value.shape and compare_outputs(value, got[key], rtol=1e-5)[0] <= 1e-5 * max(
                1.0, float(np.abs(value).max())
            ), key


def test_onnx_is_opset_17_with_dynamic_batch_and_size(built):
    import onnx

    model = onnx.load(str(built.out_dir / "classification.onnx"))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (image,) = model.graph.input
    dims = image.type.tensor_type.shape.dim
    assert image.name == "images" and [d.dim_value for d in dims][3] == 3
    assert all(d.dim_param and not d.dim_value for d in dims[:3])  # batch, height, width: symbolic
    assert [o.name for o in model.graph.output] == ["logits"]


def test_litert_input_is_dynamic_and_named_like_the_savedmodel(built):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(built.out_dir / "feature_vector.tflite"))
    signature = interpreter.get_signature_list()["serving_default"]
    assert signature == {"inputs": ["images"], "outputs": ["feature_vector"]}
    (detail,) = interpreter.get_input_details()
    assert list(detail["shape_signature"]) == [-1, -1, -1, 3]
    assert tflite_runner(built.out_dir / "feature_vector.tflite")(_images(96, 64))["feature_vector"].shape == (2, 1280)


def test_serving_savedmodel_has_constants_only_and_the_same_outputs(built):
    for task in TASKS:
        folder = built.out_dir / f"{task}-serving"
        loaded = tf.saved_model.load(str(folder))
        assert list(loaded.signatures) == ["serving_default"]
        signature = loaded.signatures["serving_default"]
        assert not signature.variables and not getattr(loaded, "trainable_variables", ())
        ops = {op.type for op in signature.graph.get_operations()}
        assert not ops & {"VarHandleOp", "ReadVariableOp", "ResourceGather"}, ops
        images = _images(*check_sizes(get_variant("A0"))[1], seed=5)
        fine_tunable = savedmodel_runner(built.out_dir / task)(images)
        served = savedmodel_runner(folder)(images)
        for key, value in fine_tunable.items():
            diff, _, tol = compare_outputs(value, served[key], rtol=deploy.DEPLOY_RTOL[formats.SERVING])
            assert diff <= tol, (task, key, diff)
        meta = json.loads((folder / "metadata.json").read_text())
        assert meta["task"] == f"{task}-serving" and meta["fine_tunable"] is False
    assert (built.out_dir / "classification-serving" / "assets" / "labels.txt").is_file()


def test_published_version_has_seven_handles_each_verified(published):
    local, _, handles = published
    assert handles == [f"repvgg/a0/{t}/1" for t in (*TASKS, "train", *SERVING_TASKS)]
    for handle in handles:
        report = verify(local, handle)
        assert report.ok, (handle, report.problems)
    files = local.artifact_files(Handle.parse("repvgg/a0/classification/1"))
    manifest = json.loads(files.manifest.read_text())
    assert manifest["tflite"]["sha256"] == sha256_file(files.tflite)
    assert manifest["onnx"]["sha256"] == sha256_file(files.onnx)


def test_verify_names_a_tampered_tflite(published, tmp_path):
    local, _, _ = published
    files = local.artifact_files(Handle.parse("repvgg/a0/feature_vector/1"))
    saved = tmp_path / "saved.tflite"
    shutil.copy2(files.tflite, saved)
    try:
        files.tflite.chmod(0o644)
        with open(files.tflite, "r+b") as handle:
            handle.seek(1000)
            handle.write(b"\0" * 8)
        report = verify(local, "repvgg/a0/feature_vector/1")
        assert not report.ok and any(p.startswith("1.tflite: sha256 differs") for p in report.problems), report
    finally:
        shutil.copy2(saved, files.tflite)


def test_tf_serving_base_path_holds_integer_versions(published):
    local, _, _ = published
    for task in SERVING_TASKS:
        base = local.root / "repvgg" / "a0" / task
        versions = [p for p in base.iterdir() if p.name.isdigit()]
        assert [p.name for p in versions] == ["1"] and (versions[0] / "saved_model.pb").is_file()
        assert (versions[0] / "variables").is_dir()


def test_server_returns_tflite_for_lite_format_and_by_name(published):
    local, url, _ = published
    files = local.artifact_files(Handle.parse("repvgg/a0/classification/1"))
    for path in ("repvgg/a0/classification/1?lite-format=tflite", "repvgg/a0/classification/1.tflite"):
        with urllib.request.urlopen(f"{url}/{path}") as response:
            body = response.read()
            assert response.headers["ETag"] == f'"{sha256_file(files.tflite)}"'
        assert body == files.tflite.read_bytes()
    with urllib.request.urlopen(f"{url}/repvgg/a0/classification/1.onnx") as response:
        assert response.read() == files.onnx.read_bytes()
    with urllib.request.urlopen(f"{url}/index.json") as response:
        rows = {row["handle"]: row for row in json.loads(response.read())}
    assert rows["repvgg/a0/classification/1"]["tflite_url"].endswith("/repvgg/a0/classification/1.tflite")
    assert "tflite_url" not in rows["repvgg/a0/classification-serving/1"]
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{url}/repvgg/a0/train/1?lite-format=tflite")
    assert caught.value.code == 404


def test_serving_handle_loads_in_tensorflow_hub_over_http(published, built, tmp_path, monkeypatch):
    _, url, _ = published
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "cache"))
    layer = hub.KerasLayer(
        f"{url}/repvgg/a0/classification-serving/1", signature="serving_default", output_key="logits"
    )
    model = tf_keras.Sequential([tf_keras.Input((None, None, 3)), layer])
    images = _images(224, 224, seed=6)
    expected = savedmodel_runner(built.out_dir / "classification")(images)["logits"]
    diff, _, tol = compare_outputs(expected, model(images).numpy(), rtol=deploy.DEPLOY_RTOL[formats.SERVING])
    assert diff <= tol
    with urllib.request.urlopen(f"{url}/repvgg/a0/classification-serving/1") as response:
        page = response.read().decode()
    assert "TF Serving" in page and 'signature="serving_default"' in page


def test_a_conversion_over_its_bound_is_one_line_and_writes_nothing(timm_a0, tmp_path, monkeypatch):
    monkeypatch.setitem(deploy.DEPLOY_RTOL, formats.TFLITE, 0.0)  # LiteRT's float32 rounding is then too much
    out = tmp_path / "a0"
    with pytest.raises(BuildError) as caught:
        build_artifacts("A0", out, weights=str(timm_a0[1]), formats=["tflite"])
    message = str(caught.value)
    assert "\n" not in message and ".tflite differs from the" in message and "max abs diff" in message, message
    assert not out.exists() and not any(tmp_path.iterdir())


def test_formats_option_errors_are_one_line(tmp_path, monkeypatch):
    result = CliRunner().invoke(
        app, ["build", "A0", "--weights", "random", "--formats", "tflite,coreml", "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "invalid --formats 'coreml'" in result.output and "Traceback" not in result.output
    monkeypatch.setattr(formats, "onnx_available", lambda: False)
    result = CliRunner().invoke(
        app, ["build", "A0", "--weights", "random", "--formats", "onnx", "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "pip install 'repvgg-registry[onnx]'" in result.output
    assert not (tmp_path / "x").exists()
    monkeypatch.delenv(FORMATS_ENV)
    notes = []
    assert resolve_formats(None, warn=notes.append) == ("serving", "tflite")
    assert len(notes) == 1 and "onnx extra" in notes[0]
    monkeypatch.setenv(FORMATS_ENV, "serving")
    assert resolve_formats(None) == ("serving",)


def _photos(folder, count: int, *, seed: int = 0):
    """``count`` small images of smooth colour fields (JPEG, and every fifth a PNG) of mixed sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        height, width = int(rng.integers(120, 300)), int(rng.integers(120, 300))
        low = rng.random((4, 4, 3)).astype(np.float32)
        image = tf.image.resize(low[None], (height, width))[0]
        pixels = tf.cast(tf.clip_by_value(image * 255, 0, 255), tf.uint8)
        data = tf.io.encode_png(pixels) if i % 5 == 0 else tf.io.encode_jpeg(pixels, quality=90)
        (folder / f"{i:03d}.{'png' if i % 5 == 0 else 'jpg'}").write_bytes(data.numpy())
    return folder


def test_int8_on_request_with_its_agreement_report_published_and_served(timm_a0, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    images = _photos(tmp_path / "calibration", 40)
    out = tmp_path / "a0"
    result = build_artifacts("A0", out, weights=str(timm_a0[1]), formats=(), int8_calibration=images)
    for task in TASKS:
        path = out / f"{task}.int8.tflite"
        interpreter = Interpreter(model_path=str(path))
        (detail,) = interpreter.get_input_details()
        assert detail["dtype"] == np.float32 and all(o["dtype"] == np.float32 for o in interpreter.get_output_details())
        assert any(t["dtype"] == np.int8 for t in interpreter.get_tensor_details()), "not quantized"
        record = json.loads((out / task / "metadata.json").read_text())["deploy"]["tflite_int8"]
        assert record["calibration_images"] == 30 and record["held_out_images"] == 10
        assert -1 <= record["mean_cosine"] <= 1
        assert ("top1_agreement" in record) == (task == "classification")
        card = (out / task / "README.md").read_text()
        assert "LiteRT int8" in card and "QARepVGG" in card and "calibration images" in card
    assert not any(out.glob("*.onnx")) and not any(out.glob("*-serving"))
    assert 0 <= result.metadata["classification"]["deploy"]["tflite_int8"]["top1_agreement"] <= 1
    run = tflite_runner(out / "classification.int8.tflite")
    assert run(_images(224, 224))["logits"].shape == (2, 1000)

    stage_release(out)
    local = LocalHub(tmp_path / "hub")
    local.publish_staged("a0", out)
    assert verify(local, "repvgg/a0/classification/1").ok
    server, url = serve_in_thread(local, log=lambda line: None)
    try:
        files = local.artifact_files(Handle.parse("repvgg/a0/classification/1"))
        with urllib.request.urlopen(f"{url}/repvgg/a0/classification/1.int8.tflite") as response:
            assert response.read() == files.tflite_int8.read_bytes()
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"{url}/repvgg/a0/classification/1.tflite")
        assert caught.value.code == 404 and "--formats tflite" in caught.value.read().decode()
    finally:
        server.shutdown()


@pytest.mark.parametrize("problem", ["too few", "unreadable", "not a folder"])
def test_bad_calibration_folder_is_one_line_before_any_build(tmp_path, problem):
    folder = tmp_path / "images"
    if problem == "too few":
        _photos(folder, 5)
        expected = "has 5 JPEG/PNG images; int8 calibration needs at least 32"
    elif problem == "unreadable":
        _photos(folder, 33)
        (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
        expected = "broken.jpg': not a readable JPEG or PNG image (Unknown image file format"
    else:
        folder = tmp_path / "missing"
        expected = "not a folder"
    out = tmp_path / "x"
    result = CliRunner().invoke(
        app, ["build", "A0", "--weights", "random", "--int8-calibration", str(folder), "--out", str(out)]
    )
    assert result.exit_code == 2 and expected in result.output and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_hugging_face_commit_carries_the_deployment_files(built, standin, tmp_path):
    """The same release on the Hugging Face stand-in (tests/hf_standin.py, the documented wire
    protocol): one tagged commit with every deployment file, seven handles, a card that lists them."""
    from huggingface_hub import HfApi

    from repvgg_registry.registry.huggingface import HuggingFaceHub

    _, url = standin
    staged = tmp_path / "staged"
    shutil.copytree(built.out_dir, staged)
    stage_release(staged)
    hf = HuggingFaceHub("deployorg", token="hf_test_token", endpoint=url, backoff_s=0.01)
    published = hf.publish_staged("a0", staged)
    assert [str(v.handle) for v in published] == [f"repvgg/a0/{t}/1" for t in (*TASKS, "train", *SERVING_TASKS)]
    files = set(HfApi(endpoint=url, token="hf_test_token").list_repo_files("deployorg/repvgg-a0", revision="v1"))
    for task in TASKS:
        assert {f"{task}.tflite", f"{task}.onnx", f"{task}-serving.tar.gz", f"{task}-serving/saved_model.pb"} <= files
    card = HfApi(endpoint=url).hf_hub_download("deployorg/repvgg-a0", "README.md", revision="v1")
    text = Path(card).read_text(encoding="utf-8")
    assert "classification.tflite sha256" in text and "feature_maps.onnx sha256" in text
    assert "classification-serving.tar.gz sha256" in text and "for TF Serving" in text
    serving = hf.artifact_files(Handle.parse("repvgg/a0/classification-serving/1"))
    assert serving.keras is None and (serving.folder / "saved_model.pb").is_file()
    assert verify(hf, "repvgg/a0/classification-serving/1").ok
    tflite = hf.artifact_files(Handle.parse("repvgg/a0/classification/1")).tflite
    assert tflite.read_bytes() == (built.out_dir / "classification.tflite").read_bytes()
