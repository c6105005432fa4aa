"""Smoke tests so the benchmarks cannot rot: each script runs end to end on A0 with one repeat.
They assert that the scripts work and agree with timm, not how fast anything is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_inference_benchmark_smoke(tmp_path):
    data = _run(
        "inference.py",
        "--variants",
        "A0",
        "--batch",
        "1",
        "--repeats",
        "1",
        "--min-seconds",
        "0.01",
        out=tmp_path / "inference.json",
    )
    runners = {r["runner"] for r in data["results"]}
    assert (
        len(runners) == 14
        and sum("onnxruntime" in r for r in runners) == 2
        and any("classification-serving" in r for r in runners)
        and any(r.endswith("classification.tflite (LiteRT, XNNPACK)") for r in runners)
        and sum("feature_maps" in r for r in runners) == 2
        and any("feature_vector" in r for r in runners)
        and sum("classification.keras" in r for r in runners) == 2
        and any("hub.KerasLayer" in r for r in runners)
        and any("frozen" in r for r in runners)
    )
    assert data["fp32_ceiling_gflops"] > 0 and data["machine"]["cpu"]
    (target,) = data["targets"]
    assert (target["variant"], target["batch"]) == ("A0", 1) and target["fastest_ours"].startswith("ours: ")
    assert min(target["fastest_vs_best_peer"], target["serving_vs_timm"], target["onnx_vs_timm_onnx"]) > 0
    assert [(c["variant"], c["batch"]) for c in data["feature_maps_cost"]] == [("A0", 1)]
    for row in data["results"]:
        assert row["images_per_s_median"] > 0 and row["max_rel_diff_vs_timm"] < 1e-4, row


def test_publish_benchmark_smoke(tmp_path):
    # one deployment format keeps the convert phase in the smoke run (all of them triple its time)
    data = _run(
        "publish.py", "--variants", "A0", "--formats", "serving", "--repeats", "1", out=tmp_path / "publish.json"
    )
    phases = data["publish"][0]["phases"]
    assert list(phases) == ["build", "weights", "fuse", "export", "convert", "check", "archive", "publish"]
    assert all(p["seconds"] >= 0 and p["peak_rss_mib"] > 0 for p in phases.values())
    assert {c["command"] for c in data["cold_start"]} == {
        "repvgg-registry --help",
        "repvgg-registry list",
        'python -c "import tensorflow"',
    }


def test_kernel_benchmark_smoke(tmp_path):
    """Per-conv kernel times from oneDNN's verbose log and onnxruntime's profiler (timm's ONNX and
    ours), one per layer, and both ONNX graphs' kernel time by op type."""
    data = _run(
        "kernels.py",
        *("--variant", "A0", "--batch", "1", "--size", "64", "--rounds", "1", "--calls", "2"),
        out=tmp_path / "kernels.json",
    )
    from repvgg_registry.variants import get_variant

    assert [row["layer"] for row in data["layers"]] == [plan.name for plan in get_variant("A0").layers()]
    for row in data["layers"]:
        assert row["gflop"] > 0 and min(row[c] for c in ("tf_ms", "tf_frozen_ms", "ort_ms", "ort_ours_ms")) > 0, row
    assert set(data["wall_ms"]) == {"tf", "tf_frozen", "ort", "ort_ours"} and min(data["wall_ms"].values()) > 0
    # both graphs' convs are in their op tables; ours also holds the NHWC transpose timm's has no need of
    for kind in ("ort", "ort_ours"):
        convs = sum(ms for op, ms in data["op_ms"][kind].items() if op in ("Conv", "FusedConv", "NhwcFusedConv"))
        assert convs == pytest.approx(data["conv_ms_total"][kind])
    assert "Transpose" in data["op_ms"]["ort_ours"] and "Transpose" not in data["op_ms"]["ort"]
    # The totals are the sums of the per-layer columns (no timing bound here: the profiled calls and the
    # wall-clock calls are different runs, and on a shared 2-core host either can be the slower).
    columns = {"tf": "tf_ms", "tf_frozen": "tf_frozen_ms", "ort": "ort_ms", "ort_ours": "ort_ours_ms"}
    assert set(data["conv_ms_total"]) == set(columns)
    for kind, column in columns.items():
        assert data["conv_ms_total"][kind] == pytest.approx(sum(row[column] for row in data["layers"]))
