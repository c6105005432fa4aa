"""Our frozen serving signature (or the published inference-only SavedModel, ``--as-is``) in a child
process, timed call by call from the parent.

Why a child: TF's oneDNN convolutions share one primitive cache per process, keyed by shapes and
post-ops but not by the weights' layout. A frozen copy (weights as constants, blocked layout) and
the plain signature (weights as variables, plain layout) of the same model in one process therefore
pick up each other's primitives, and which layout wins depends on who ran first. A serving process
runs only the frozen copy, so that is what the benchmark times; the parent still interleaves it
with the other runners (one line over a pipe per call, well under a millisecond).

The child makes its input with the parent's ``common.sample_batch``, so both see the same images.

    python benchmarks/isolated.py SAVED_MODEL --batch 1 --size 224 --threads 2 [--as-is]
    stdin: "run" -> one call, prints "ok";  "dump PATH" -> saves the output as .npy;  EOF -> exit
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


class IsolatedFrozenServing:
    """Parent side: start the child, then ``call()`` runs one batch in it."""

    def __init__(self, saved_model: Path, *, batch: int, size: int, threads: int, freeze: bool = True) -> None:
        command = [sys.executable, __file__, str(saved_model), "--batch", str(batch), "--size", str(size)]
        command += ["--threads", str(threads)] + ([] if freeze else ["--as-is"])
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        # stderr to a file, not a pipe nobody reads while the child runs: TF's start-up logging
        # could fill a pipe and block the child.
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives as long as the child; close()
        self._proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env
        )
        self._expect("ready")

    def _expect(self, word: str) -> None:
        line = self._proc.stdout.readline().strip()
        if line != word:
            self._proc.kill()
            self._proc.wait()
            self._stderr.seek(0)
            raise RuntimeError(f"isolated child said {line!r}, not {word!r}: {self._stderr.read()[-3000:]}")

    def _send(self, line: str) -> None:
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()
        self._expect("ok")

    def call(self) -> None:
        self._send("run")

    def output(self, path: Path) -> np.ndarray:
        self._send(f"dump {path}")
        return np.load(path)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(timeout=60)
        self._stderr.close()


def _child(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("saved_model")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--as-is", action="store_true", help="call serving_default without freezing it")
    args = parser.parse_args(argv)

    import tensorflow as tf
    from common import configure_tf_threads, sample_batch

    from repvgg_registry.publish.frozen import freeze_serving

    configure_tf_threads(args.threads)
    if args.as_is:  # the <task>-serving artifact: its weights are constants already
        loaded = tf.saved_model.load(args.saved_model)
        signature = loaded.signatures["serving_default"]

        def serve(images):
            return signature(images=images)
    else:
        serve = freeze_serving(args.saved_model)
    images = tf.constant(sample_batch(args.batch, args.size))
    (key,) = serve(images=images)  # the one output key, and the first (tracing) call
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, rest = line.strip().partition(" ")
        result = serve(images=images)[key].numpy()
        if command == "dump":
            np.save(rest, result)
        print("ok", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_child())
