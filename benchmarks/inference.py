"""Inference speed, side by side in one run: our published fused SavedModel (through
``tf.saved_model.load`` and through ``hub.KerasLayer``), the deployment files of the same build
(the inference-only ``classification-serving`` SavedModel in a process of its own, as TF Serving
runs it; ``classification.tflite`` in LiteRT with XNNPACK, and ``classification.int8.tflite`` given
``--int8-calibration``; ``classification.onnx`` in onnxruntime), the ``feature_vector`` and
``feature_maps`` SavedModels and ``feature_maps.keras`` (the same network without the head, or
without the pool), our published ``classification.keras``
(Keras 3, through a ``tf.function`` and through ``predict_on_batch``), its serving signature frozen in memory
(``repvgg_registry.publish.frozen.freeze_serving``, the inference-only opt-in, timed in its own
process: see isolated.py), our train form, timm's fused model in channels_last, and onnxruntime on
timm's fused model exported to ONNX. Same random weights for all, interleaved repeats, plus the
machine's fp32 ceiling measured in the same run.

    python benchmarks/inference.py --variants A0 B0 B1g4 B3g4 --batch 1 32

Prints a rich table, the CPU it ran on, and the targets of each variant and batch as ratios of
this run: our fastest fp32 artifact against the faster of timm fused and onnxruntime on timm's
ONNX; the inference-only SavedModel against timm; our ONNX against timm's, both in onnxruntime.
Writes JSON to benchmarks/results/ (or --json PATH).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

# torch (and timm, which loads torchvision and triton) before TensorFlow: the other order crashes.
# onnxruntime is loaded here too, before TensorFlow, though only common.ort_session uses it.
import onnxruntime  # noqa: E402, F401
import timm  # noqa: E402
import torch  # noqa: E402
from common import (  # noqa: E402
    Runner,
    configure_tf_threads,
    machine,
    ort_session,
    print_table,
    run_interleaved,
    sample_batch,
    write_json,
)
from isolated import IsolatedFrozenServing  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from timm.utils.model import reparameterize_model  # noqa: E402

if TYPE_CHECKING:
    from repvgg_registry.variants import VariantSpec


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["A0", "B0", "B1g4", "B3g4"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-seconds", type=float, default=0.5, help="time per runner per repeat")
    parser.add_argument("--int8-calibration", default=None, help="a folder of images: also time the int8 .tflite")
    parser.add_argument("--json", default=None, help="where to write the results (default benchmarks/results/)")
    return parser.parse_args(argv)


def configure_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    configure_tf_threads(threads)


def fp32_ceiling(seconds: float = 3.0) -> float:
    """GFLOP/s of a large float32 matmul in TF: the practical FMA ceiling of this machine."""
    import tensorflow as tf

    n = 2048
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    matmul().numpy()
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        matmul().numpy()
        best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


FROZEN_RUNNER = "ours: frozen serving (opt-in, own process)"
SAVEDMODEL_RUNNER = "ours: SavedModel serving_default"
SERVING_RUNNER = "ours: classification-serving SavedModel (own process)"
KERAS_RUNNER = "ours: classification.keras (tf.function)"
TFLITE_RUNNER = "ours: classification.tflite (LiteRT, XNNPACK)"
INT8_RUNNER = "ours: classification.int8.tflite (LiteRT)"
ONNX_RUNNER = "ours: classification.onnx (onnxruntime)"
TIMM_RUNNER = "timm fused, channels_last"
TIMM_ONNX_RUNNER = "onnxruntime (timm fused)"
ISOLATED = (FROZEN_RUNNER, SERVING_RUNNER)
#: Our fp32 artifacts as a user loads them (the frozen in-memory copy is an opt-in, not an artifact).
OUR_FP32 = (SAVEDMODEL_RUNNER, SERVING_RUNNER, KERAS_RUNNER, TFLITE_RUNNER, ONNX_RUNNER)
VECTOR_RUNNER = "ours: feature_vector SavedModel"
MAPS_RUNNER = "ours: feature_maps SavedModel (5 maps)"


@dataclass
class Prepared:
    """One variant with one set of random weights, in every form the benchmarks compare."""

    spec: VariantSpec
    checkpoint: Path  # timm's train-form state dict (safetensors), what our build loads
    artifacts: Path  # our build output: feature_vector/, classification/ and the .keras files
    onnx: Path  # timm's fused model, exported with a dynamic batch
    timm_fused: torch.nn.Module  # channels_last


def _build_in_child(variant: str, out: Path, weights: Path, int8_calibration: str | None) -> None:
    """``repvgg-registry build`` with every format, in a process of its own: a big variant's build
    peaks near 19 GB (B3g4) and TensorFlow keeps what it allocated, so in this process the runners
    would find no memory left (B3g4 was killed for memory here)."""
    import subprocess

    from repvgg_registry.publish.formats import DEPLOY_FORMATS

    command = [sys.executable, "-m", "repvgg_registry.cli", "build", variant, "--weights", str(weights)]
    command += ["--out", str(out), "--formats", ",".join(DEPLOY_FORMATS)]
    if int8_calibration:
        command += ["--int8-calibration", int8_calibration]
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if proc.returncode != 0:
        raise RuntimeError(f"the {variant} build failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def prepare(variant: str, size: int, workdir: Path, int8_calibration: str | None = None) -> Prepared:
    """Random timm weights (seed 0) -> checkpoint -> our published SavedModels, and timm's fused
    model -> ONNX; files are reused from workdir when present."""
    from repvgg_registry.variants import get_variant

    spec = get_variant(variant)
    torch.manual_seed(0)
    if spec.timm_name:
        timm_train = timm.create_model(spec.timm_name, pretrained=False).eval()
    else:  # g2 variants: a timm ByobNet with groups 2
        from timm.models.byobnet import ByobNet, ByoModelCfg, _rep_vgg_bcfg

        a, b = spec.width_multipliers
        cfg = ByoModelCfg(blocks=_rep_vgg_bcfg(d=spec.blocks, wf=(a, a, a, b), groups=spec.groups), stem_type="rep")
        timm_train = ByobNet(cfg).eval()
    ckpt = workdir / f"{variant}.safetensors"
    save_file({k: v.contiguous() for k, v in timm_train.state_dict().items()}, str(ckpt))
    timm_fused = reparameterize_model(timm_train).eval().to(memory_format=torch.channels_last)

    out = workdir / f"{variant}-artifacts"
    if not out.exists():
        _build_in_child(variant, out, ckpt, int8_calibration)
    onnx_path = workdir / f"{variant}.onnx"
    if not onnx_path.exists():
        torch.onnx.export(
            timm_fused,
            torch.zeros(1, 3, size, size),
            str(onnx_path),
            dynamo=False,
            opset_version=17,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        )
    return Prepared(spec, ckpt, out, onnx_path, timm_fused)


def make_runners(
    variant: str, batch: int, size: int, threads: int, workdir: Path, cleanup: ExitStack, int8: str | None = None
) -> tuple[list[Runner], dict]:
    import keras
    import numpy as np
    import tensorflow as tf
    import tensorflow_hub as hub
    import tf_keras

    from repvgg_registry.publish.deploy import onnx_runner, tflite_runner
    from repvgg_registry.variants import build_model
    from repvgg_registry.variants.table import FEATURE_KEYS, IMAGENET_MEAN, IMAGENET_STD

    prepared = prepare(variant, size, workdir, int8)
    timm_fused = prepared.timm_fused
    classifier = prepared.artifacts / "classification"
    serving = tf.saved_model.load(str(classifier)).signatures["serving_default"]
    # The inference-only opt-in (weights as constants), in its own process: see isolated.py.
    frozen = IsolatedFrozenServing(classifier, batch=batch, size=size, threads=threads)
    cleanup.callback(frozen.close)
    serving_artifact = IsolatedFrozenServing(
        prepared.artifacts / "classification-serving", batch=batch, size=size, threads=threads, freeze=False
    )
    cleanup.callback(serving_artifact.close)
    run_tflite = tflite_runner(prepared.artifacts / "classification.tflite", threads=threads)
    run_onnx = onnx_runner(prepared.artifacts / "classification.onnx", threads=threads)
    layer_model = tf_keras.Sequential([tf_keras.Input((size, size, 3)), hub.KerasLayer(str(classifier))])
    train = build_model(prepared.spec, "train", weights=str(prepared.checkpoint))
    deploy_keras = keras.saving.load_model(prepared.artifacts / "classification.keras")
    session = ort_session(prepared.onnx, threads)

    images = sample_batch(batch, size)  # what our artifact takes: [0, 1]
    mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
    normalised = ((images - mean) / std).astype(np.float32)
    nchw = np.ascontiguousarray(normalised.transpose(0, 3, 1, 2))
    torch_in = torch.from_numpy(nchw).contiguous(memory_format=torch.channels_last)
    tf_images = tf.constant(images)
    tf_normalised = tf.constant(normalised)
    # Both Keras models called through a tf.function, as a serving loop would (predict_on_batch
    # adds per-call overhead that is not the model's).
    layer_call = tf.function(lambda x: layer_model(x, training=False))
    train_call = tf.function(lambda x: train(x, training=False))
    keras_call = tf.function(lambda x: deploy_keras(x, training=False))

    def run_timm():
        with torch.inference_mode():
            return timm_fused(torch_in).numpy()

    vector_serving = tf.saved_model.load(str(prepared.artifacts / "feature_vector")).signatures["serving_default"]
    maps_serving = tf.saved_model.load(str(prepared.artifacts / "feature_maps")).signatures["serving_default"]
    maps_keras = keras.saving.load_model(prepared.artifacts / "feature_maps.keras")
    maps_call = tf.function(lambda x: maps_keras(x, training=False))

    def as_arrays(result):
        """A runner's result for the agreement check: the maps (a dict of tensors) in level order.
        Timed calls return the maps as tensors, what a neck consumes: copying five maps to numpy
        costs more than the network at batch 32 (A0: 325 ms against 460 ms)."""
        return [np.asarray(result[key]) for key in FEATURE_KEYS] if isinstance(result, dict) else np.asarray(result)

    runners = [
        Runner(SAVEDMODEL_RUNNER, lambda: serving(images=tf_images)["logits"].numpy(), batch),
        Runner(SERVING_RUNNER, serving_artifact.call, batch),
        Runner(TFLITE_RUNNER, lambda: run_tflite(images)["logits"], batch),
        Runner(ONNX_RUNNER, lambda: run_onnx(images)["logits"], batch),
        Runner(
            VECTOR_RUNNER, lambda: vector_serving(images=tf_images)["feature_vector"].numpy(), batch, "feature_vector"
        ),
        Runner(MAPS_RUNNER, lambda: maps_serving(images=tf_images), batch, "feature_maps"),
        Runner("ours: feature_maps.keras (tf.function)", lambda: maps_call(tf_images), batch, "feature_maps"),
        Runner("ours: hub.KerasLayer", lambda: layer_call(tf_images).numpy(), batch),
        Runner(KERAS_RUNNER, lambda: keras_call(tf_images).numpy(), batch),
        Runner("ours: classification.keras predict_on_batch", lambda: deploy_keras.predict_on_batch(images), batch),
        Runner(FROZEN_RUNNER, frozen.call, batch),
        Runner("ours: train form (Keras 3)", lambda: train_call(tf_normalised).numpy(), batch),
        Runner(TIMM_RUNNER, run_timm, batch),
        Runner(TIMM_ONNX_RUNNER, lambda: session.run(None, {"images": nchw})[0], batch),
    ]
    if int8:
        run_int8 = tflite_runner(prepared.artifacts / "classification.int8.tflite", threads=threads)
        runners.insert(3, Runner(INT8_RUNNER, lambda: run_int8(images)["logits"], batch))
    outputs = {r.name: as_arrays(r.call()) for r in runners if r.name not in ISOLATED}
    outputs[FROZEN_RUNNER] = frozen.output(workdir / "frozen-output.npy")
    outputs[SERVING_RUNNER] = serving_artifact.output(workdir / "serving-output.npy")
    with torch.inference_mode():  # timm's own pooled features and feature maps (NCHW -> NHWC)
        pooled = timm_fused.forward_head(timm_fused.forward_features(torch_in), pre_logits=True).numpy()
        timm_maps = [
            m.permute(0, 2, 3, 1).numpy() for m in timm_fused.forward_intermediates(torch_in, intermediates_only=True)
        ]
    references = {
        "logits": [outputs[TIMM_RUNNER]],
        "feature_vector": [pooled],
        "feature_maps": timm_maps,
    }

    def rel_diff(runner: Runner) -> float:
        got = outputs[runner.name]
        got = got if isinstance(got, list) else [got]
        expected = references[runner.output]
        return max(
            float(np.abs(np.asarray(g) - e).max()) / max(1.0, float(np.abs(e).max()))
            for g, e in zip(got, expected, strict=True)
        )

    return runners, {runner.name: rel_diff(runner) for runner in runners}


def target_ratios(variant: str, batch: int, rates: dict[str, float]) -> dict:
    """The issue's targets as ratios of this run's median rates."""
    fastest = max(OUR_FP32, key=lambda name: rates[name])
    best_peer = max(rates[TIMM_RUNNER], rates[TIMM_ONNX_RUNNER])
    return {
        "variant": variant,
        "batch": batch,
        "fastest_ours": fastest,
        "fastest_vs_best_peer": rates[fastest] / best_peer,
        "serving_vs_timm": rates[SERVING_RUNNER] / rates[TIMM_RUNNER],
        "onnx_vs_timm_onnx": rates[ONNX_RUNNER] / rates[TIMM_ONNX_RUNNER],
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    configure_threads(args.threads)
    from repvgg_registry.variants import count_macs, get_variant

    ceiling = fp32_ceiling()
    rows, records, maps_cost, targets = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="repvgg-bench-") as tmp:
        for variant in args.variants:
            macs = count_macs(get_variant(variant), args.size)
            for batch in args.batch:
                with ExitStack() as cleanup:
                    runners, agreement = make_runners(
                        variant, batch, args.size, args.threads, Path(tmp), cleanup, args.int8_calibration
                    )
                    run_interleaved(runners, args.repeats, min_seconds=args.min_seconds)
                ours = runners[0].median_rate
                rates = {runner.name: runner.median_rate for runner in runners}
                best = {runner.name: runner.best_rate for runner in runners}
                targets.append(target_ratios(variant, batch, rates))
                maps_cost.append(
                    (variant, batch, rates[VECTOR_RUNNER] / rates[MAPS_RUNNER], best[VECTOR_RUNNER] / best[MAPS_RUNNER])
                )
                for runner in runners:
                    gflops = 2 * macs * runner.median_rate / 1e9
                    record = {
                        "variant": variant,
                        "batch": batch,
                        "runner": runner.name,
                        "images_per_s_median": runner.median_rate,
                        "images_per_s_best": runner.best_rate,
                        "gflops": gflops,
                        "share_of_ceiling": gflops / ceiling,
                        "ours_vs_this": ours / runner.median_rate,
                        "max_rel_diff_vs_timm": agreement[runner.name],
                        "repeats": len(runner.seconds),
                    }
                    records.append(record)
                    rows.append(
                        [
                            variant,
                            str(batch),
                            runner.name,
                            f"{runner.median_rate:.1f} [{runner.best_rate:.1f}]",
                            f"{gflops:.0f}",
                            f"{100 * gflops / ceiling:.0f}%",
                            f"{ours / runner.median_rate:.2f}x",
                        ]
                    )
    cpu = machine().get("cpu", "unknown CPU")
    print_table(
        f"RepVGG inference at {args.size}x{args.size}, {args.threads} threads on {cpu}; "
        f"fp32 ceiling {ceiling:.0f} GFLOP/s",
        ["variant", "batch", "runner", "images/s median [best]", "GFLOP/s", "of ceiling", "ours is"],
        rows,
    )
    print_table(
        f"targets on {cpu} (ratios of median images/s in this run; >= 1.0 meets, ONNX >= 0.95)",
        ["variant", "batch", "fastest fp32 of ours", "vs best peer", "serving vs timm", "ONNX vs timm ONNX"],
        [
            [
                t["variant"],
                str(t["batch"]),
                t["fastest_ours"].removeprefix("ours: "),
                f"{t['fastest_vs_best_peer']:.2f}x",
                f"{t['serving_vs_timm']:.2f}x",
                f"{t['onnx_vs_timm_onnx']:.2f}x",
            ]
            for t in targets
        ],
    )
    for variant, batch, ratio, best_ratio in maps_cost:
        print(
            f"{variant} batch {batch}: feature_maps costs {ratio:.3f}x the feature_vector's time "
            f"(median; {best_ratio:.3f}x best against best)"
        )
    write_json(
        "inference",
        {
            "args": vars(args),
            "fp32_ceiling_gflops": ceiling,
            "results": records,
            "targets": targets,
            "feature_maps_cost": [
                {"variant": v, "batch": b, "vs_feature_vector": r, "vs_feature_vector_best": rb}
                for v, b, r, rb in maps_cost
            ],
        },
        args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
