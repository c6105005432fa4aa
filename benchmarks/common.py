"""Shared by the benchmarks: interleaved timing, a machine description, rich tables, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.table import Table

RESULTS_DIR = Path(__file__).resolve().parent / "results"
console = Console(width=160)


@dataclass
class Runner:
    """One thing to time: ``call()`` processes one batch and returns once the result exists."""

    name: str
    call: Callable[[], object]
    items_per_call: int
    output: str = "logits"  # what call() returns: logits, feature_vector or feature_maps (a list)
    iterations: int = 1  # calls per repeat, set by calibrate()
    seconds: list[float] = field(default_factory=list)  # per item, one entry per repeat

    def calibrate(self, min_seconds: float) -> None:
        start = time.perf_counter()
        self.call()
        once = max(time.perf_counter() - start, 1e-6)
        self.iterations = max(1, int(min_seconds / once))

    def time_once(self) -> None:
        start = time.perf_counter()
        for _ in range(self.iterations):
            self.call()
        self.seconds.append((time.perf_counter() - start) / (self.iterations * self.items_per_call))

    @property
    def median_rate(self) -> float:
        return 1.0 / statistics.median(self.seconds)

    @property
    def best_rate(self) -> float:
        return 1.0 / min(self.seconds)


def run_interleaved(runners: list[Runner], repeats: int, *, warmup: int = 2, min_seconds: float = 0.3) -> None:
    """Warm every runner up, then time repeat after repeat, each repeat visiting every runner in
    turn (rotating the order), so that machine noise hits all of them alike."""
    for runner in runners:
        for _ in range(warmup):
            runner.call()
        runner.calibrate(min_seconds)
    for r in range(repeats):
        shift = r % len(runners)
        for runner in runners[shift:] + runners[:shift]:
            runner.time_once()


def configure_tf_threads(threads: int) -> None:
    """TensorFlow on ``threads`` intra-op threads and one inter-op thread, like every runner."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def sample_batch(batch: int, size: int):
    """The benchmark input: RGB in [0, 1], NHWC float32, from ``default_rng(0)``. Every process that
    times a model (the parent and its children) makes it here, so all see the same images."""
    import numpy as np

    return np.random.default_rng(0).random((batch, size, size, 3), dtype=np.float32)


def ort_session(path: Path, threads: int, **options):
    """onnxruntime on the CPU with ``threads`` intra-op threads (and any other SessionOptions)."""
    import onnxruntime as ort

    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = threads
    session_options.inter_op_num_threads = 1
    for name, value in options.items():
        setattr(session_options, name, value)
    return ort.InferenceSession(str(path), session_options, providers=["CPUExecutionProvider"])


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    table = Table(title=title, header_style="bold")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i < 2 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def write_json(name: str, payload: dict, path: str | None = None) -> Path:
    target = Path(path) if path else RESULTS_DIR / f"{name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = {"created": datetime.now(timezone.utc).isoformat(), "machine": machine(), **payload}
    target.write_text(json.dumps(payload, indent=2) + "\n")
    console.print(f"wrote {target}")
    return target
