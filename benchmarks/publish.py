"""Wall time and peak memory of each phase of `publish` (build, weights, fuse, export, convert,
check, archive, publish) per variant, with every artifact (all deployment formats unless
``--formats`` says otherwise), each variant in a fresh process; and the cold start of
`repvgg-registry list` and `--help` against `python -c "import tensorflow"`.

    python benchmarks/publish.py --variants A0 B3g4 [--formats serving,tflite,onnx]

Prints rich tables and writes JSON to benchmarks/results/ (or --json PATH).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, print_table, write_json  # noqa: E402


def worker(variant: str, weights: str, formats: str) -> dict:
    """In a fresh process: publish one variant to a temporary hub, timing each phase."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from repvgg_registry.publish.build import Reporter
    from repvgg_registry.publish.formats import parse_formats
    from repvgg_registry.registry import LocalHub
    from repvgg_registry.registry.operations import publish_variant

    phases: dict[str, dict] = {}

    class Recorder(Reporter):
        @contextlib.contextmanager
        def phase(self, name):
            start = time.perf_counter()
            yield
            peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            phases[name] = {"seconds": time.perf_counter() - start, "peak_rss_mib": peak_mib}

    with tempfile.TemporaryDirectory(prefix="repvgg-bench-hub-") as hub:
        start = time.perf_counter()
        chosen = parse_formats(formats)
        publish_variant(LocalHub(hub), variant, weights=weights, formats=chosen, reporter=Recorder())
        total = time.perf_counter() - start
    return {"variant": variant, "weights": weights, "formats": formats, "total_seconds": total, "phases": phases}


def cold_start(repeats: int) -> list[dict]:
    script = str(Path(sys.executable).parent / "repvgg-registry")
    commands = {
        "repvgg-registry --help": [script, "--help"],
        "repvgg-registry list": [script, "list"],
        'python -c "import tensorflow"': [sys.executable, "-c", "import tensorflow"],
    }
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):  # interleaved
        for name, command in commands.items():
            start = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True, env=env)
            times[name].append(time.perf_counter() - start)
    return [{"command": n, "median_s": statistics.median(t), "best_s": min(t)} for n, t in times.items()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["A0", "B3g4"])
    parser.add_argument("--weights", default="random", help="weights for publish (random works offline)")
    parser.add_argument("--formats", default="serving,tflite,onnx", help="deployment formats (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="cold-start repeats")
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.weights, args.formats)))
        return 0

    results = []
    for variant in args.variants:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", variant, "--weights", args.weights, "--formats", args.formats],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    rows = []
    for result in results:
        for phase, data in result["phases"].items():  # in the order publish ran them
            rows.append([result["variant"], phase, f"{data['seconds']:.2f}", f"{data['peak_rss_mib']:.0f}"])
        rows.append([result["variant"], "total", f"{result['total_seconds']:.2f}", ""])
    cpu = machine().get("cpu", "unknown CPU")
    title = f"publish phases on {cpu} (fresh process per variant; formats: {args.formats})"
    print_table(title, ["variant", "phase", "seconds", "peak RSS MiB"], rows)
    starts = cold_start(args.repeats)
    print_table(
        "cold start",
        ["command", "", "median s", "best s"],
        [[s["command"], "", f"{s['median_s']:.2f}", f"{s['best_s']:.2f}"] for s in starts],
    )
    write_json("publish", {"args": vars(args), "publish": results, "cold_start": starts}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
