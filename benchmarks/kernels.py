"""Where the time goes, conv by conv: oneDNN's kernel time for each conv of our published
SavedModel (its serving signature as loaded, and frozen in memory with ``freeze_serving``) next to
onnxruntime's kernel time for the same conv of timm's fused model and of our own ``classification.onnx``,
plus each one's wall time per call, and for both ONNX graphs the kernel time by op type (what runs
besides the convs: our graph takes NHWC images in [0, 1], so it holds a transpose and the normalisation).

    python benchmarks/kernels.py --variant A0 --batch 1

Why: the end-to-end benchmark (inference.py) says *how much* slower or faster we are; this says
*where*. TF's time comes from oneDNN's verbose log (``ONEDNN_VERBOSE=1``: one line per primitive
with its execution time), onnxruntime's from its profiler. Each of the three runs in its own child
process (oneDNN reads ONEDNN_VERBOSE once per process), and the rounds alternate between them so
that machine noise hits all alike; per-layer figures are medians over rounds. TF's wall time is
taken while oneDNN writes its log (one line per primitive, to a file), onnxruntime's without the
profiler, so the wall column slightly favours onnxruntime; the kernel columns are like for like.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

CONV_OPS = {"Conv", "FusedConv", "NhwcFusedConv"}
RUNS = ("tf", "tf_frozen", "ort", "ort_ours")
WARMUP_CALLS = 3  # untimed calls before the timed ones, in every child


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="A0")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=10, help="timed calls per child process")
    parser.add_argument("--rounds", type=int, default=3, help="child processes per run kind, alternating")
    parser.add_argument("--json", default=None, help="where to write the results (default benchmarks/results/)")
    parser.add_argument("--child", choices=sorted(RUNS), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --- child processes: run one model, print per-call conv kernel times as JSON on the last line ---


def _child_tf(args: argparse.Namespace) -> dict:
    """Run the SavedModel with oneDNN's verbose log on and split it into calls."""
    import tensorflow as tf
    from common import configure_tf_threads, sample_batch

    configure_tf_threads(args.threads)
    loaded = tf.saved_model.load(args.model)
    if args.child == "tf_frozen":
        from repvgg_registry.publish.frozen import freeze_serving

        serving = freeze_serving(loaded)
    else:
        serving = loaded.signatures["serving_default"]
    images = tf.constant(sample_batch(args.batch, args.size))
    for _ in range(WARMUP_CALLS):
        serving(images=images)
    sys.stdout.flush()
    with tempfile.TemporaryFile(mode="w+") as log:
        saved_stdout = os.dup(1)
        os.dup2(log.fileno(), 1)  # oneDNN writes its verbose lines to fd 1
        try:
            start = time.perf_counter()
            for _ in range(args.calls):
                serving(images=images)
            wall = (time.perf_counter() - start) / args.calls
        finally:
            sys.stdout.flush()
            os.dup2(saved_stdout, 1)
            os.close(saved_stdout)
        log.seek(0)
        convs = [
            float(line.rsplit(",", 1)[1])
            for line in log
            if line.startswith("onednn_verbose") and ",exec,cpu,convolution," in line
        ]
    return {"wall_ms": wall * 1e3, "conv_ms": _per_layer(convs, recorded_calls=args.calls, keep=args.calls)}


def _child_ort(args: argparse.Namespace) -> dict:
    """Run the ONNX model with onnxruntime's profiler and take its conv nodes' kernel times."""
    import numpy as np
    from common import ort_session, sample_batch

    # One session at a time: an idle session's spinning threads would steal the other's cores.
    session = ort_session(Path(args.model), args.threads)
    images = sample_batch(args.batch, args.size)  # NHWC, as our graph takes it; timm's takes NCHW
    if session.get_inputs()[0].shape[-1] != 3:
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    for _ in range(WARMUP_CALLS):
        session.run(None, {"images": images})
    start = time.perf_counter()
    for _ in range(args.calls):
        session.run(None, {"images": images})
    wall = (time.perf_counter() - start) / args.calls
    del session
    with tempfile.TemporaryDirectory() as tmp:
        profiled = ort_session(
            Path(args.model), args.threads, enable_profiling=True, profile_file_prefix=str(Path(tmp) / "p")
        )
        for _ in range(WARMUP_CALLS + args.calls):
            profiled.run(None, {"images": images})
        events = json.loads(Path(profiled.end_profiling()).read_text())
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    convs = [e["dur"] / 1e3 for e in nodes if e["args"].get("op_name") in CONV_OPS]
    # The profiler also saw the warm-up calls: keep the last `calls` runs.
    recorded = WARMUP_CALLS + args.calls
    kept = nodes[-(len(nodes) // recorded) * args.calls :]
    op_ms: dict[str, float] = {}
    for event in kept:
        op = event["args"].get("op_name", "?")
        op_ms[op] = op_ms.get(op, 0.0) + event["dur"] / 1e3 / args.calls
    return {
        "wall_ms": wall * 1e3,
        "conv_ms": _per_layer(convs, recorded_calls=recorded, keep=args.calls),
        "op_ms": op_ms,
    }


def _median_ops(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Per op type, the median over rounds of its kernel ms per call (0 in a round without it)."""
    names = {op for r in rounds for op in r}
    return {op: statistics.median(r.get(op, 0.0) for r in rounds) for op in names}


def _per_layer(times: list[float], *, recorded_calls: int, keep: int) -> list[float]:
    """Mean time per conv position over the last ``keep`` of ``recorded_calls`` calls (every call
    runs the same convs in order)."""
    if not times or len(times) % recorded_calls:
        raise RuntimeError(f"expected a multiple of {recorded_calls} conv records, got {len(times)}")
    per_call = len(times) // recorded_calls
    times = times[-per_call * keep :]
    return [statistics.fmean(times[i::per_call]) for i in range(per_call)]


# --- parent: prepare the models, alternate the children, print the table ---


def _run_child(kind: str, model: Path, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--model",
        str(model),
        *("--batch", str(args.batch), "--size", str(args.size), "--threads", str(args.threads)),
        *("--calls", str(args.calls)),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if kind.startswith("tf"):
        env["ONEDNN_VERBOSE"] = "1"
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        result = _child_tf(args) if args.child.startswith("tf") else _child_ort(args)
        print(json.dumps(result))
        return 0

    from common import print_table, write_json
    from inference import prepare

    from repvgg_registry.variants import get_variant
    from repvgg_registry.variants.complexity import layer_macs

    spec = get_variant(args.variant)
    plans = spec.layers()
    with tempfile.TemporaryDirectory(prefix="repvgg-kernels-") as tmp:
        prepared = prepare(args.variant, args.size, Path(tmp))
        models = {
            "tf": prepared.artifacts / "classification",
            "ort": prepared.onnx,
            "ort_ours": prepared.artifacts / "classification.onnx",
        }
        models["tf_frozen"] = models["tf"]
        samples: dict[str, list[dict]] = {kind: [] for kind in RUNS}
        for _ in range(args.rounds):
            for kind in RUNS:
                samples[kind].append(_run_child(kind, models[kind], args))
    layers = {
        kind: [statistics.median(col) for col in zip(*(s["conv_ms"] for s in runs), strict=True)]
        for kind, runs in samples.items()
    }
    walls = {kind: statistics.median(s["wall_ms"] for s in runs) for kind, runs in samples.items()}
    for kind, values in layers.items():
        if len(values) != len(plans):
            raise RuntimeError(f"{kind}: {len(values)} convs per call, the variant has {len(plans)} layers")

    rows, records = [], []
    size = args.size
    columns = zip(plans, layer_macs(spec, args.size), *(layers[kind] for kind in RUNS), strict=True)
    for plan, macs, tf_ms, frozen_ms, ort_ms, ours_ms in columns:
        size = -(-size // plan.stride)
        gflop = 2 * args.batch * macs / 1e9
        records.append(
            {
                "layer": plan.name,
                "out_size": size,
                "gflop": gflop,
                "tf_ms": tf_ms,
                "tf_frozen_ms": frozen_ms,
                "ort_ms": ort_ms,
                "ort_ours_ms": ours_ms,
            }
        )
        rows.append(
            [
                plan.name,
                f"{plan.in_channels}->{plan.out_channels} g{plan.groups} /{plan.stride} @{size}",
                f"{tf_ms:.3f} ({gflop / tf_ms * 1e3:.0f})",
                f"{frozen_ms:.3f} ({gflop / frozen_ms * 1e3:.0f})",
                f"{ort_ms:.3f} ({gflop / ort_ms * 1e3:.0f})",
                f"{ours_ms:.3f} ({gflop / ours_ms * 1e3:.0f})",
                f"{tf_ms / ort_ms:.2f}",
            ]
        )
    total_gflop = sum(r["gflop"] for r in records)
    sums = {kind: sum(values) for kind, values in layers.items()}
    rows.append(
        ["all convs", f"{total_gflop:.2f} GFLOP"]
        + [f"{sums[k]:.2f} ({total_gflop / sums[k] * 1e3:.0f})" for k in RUNS]
        + [f"{sums['tf'] / sums['ort']:.2f}"]
    )
    rows.append(["wall per call", ""] + [f"{walls[k]:.2f}" for k in RUNS] + [f"{walls['tf'] / walls['ort']:.2f}"])
    print_table(
        f"{args.variant} conv kernels at batch {args.batch}, {args.size}x{args.size}, {args.threads} threads:"
        " ms per call (GFLOP/s), median of rounds",
        ["layer", "conv", "TF oneDNN", "TF oneDNN, frozen serving", "ort: timm's", "ort: ours", "TF / ort"],
        rows,
    )
    ops = {kind: _median_ops([s["op_ms"] for s in samples[kind]]) for kind in ("ort", "ort_ours")}
    timm_ops, our_ops = ops["ort"], ops["ort_ours"]

    def op_row(name: str, timm_ms: float, our_ms: float) -> list[str]:
        return [name, f"{timm_ms:.3f}", f"{our_ms:.3f}", f"{our_ms - timm_ms:+.3f}"]

    names = sorted(set(timm_ops) | set(our_ops), key=lambda op: -max(timm_ops.get(op, 0.0), our_ops.get(op, 0.0)))
    print_table(
        f"{args.variant} in onnxruntime at batch {args.batch}: kernel ms per call by op type, median of rounds",
        ["op type", "timm's ONNX", "our ONNX", "ours - timm's"],
        [op_row(op, timm_ops.get(op, 0.0), our_ops.get(op, 0.0)) for op in names]
        + [op_row("all ops", sum(timm_ops.values()), sum(our_ops.values()))],
    )
    write_json(
        f"kernels-{args.variant}-b{args.batch}",
        {
            "args": {k: v for k, v in vars(args).items() if k not in ("child", "model")},
            "layers": records,
            "conv_ms_total": sums,
            "wall_ms": walls,
            "op_ms": ops,
        },
        args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
