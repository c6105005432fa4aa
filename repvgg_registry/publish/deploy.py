"""Deployment formats, each converted from a task's checked SavedModel folder (REFERENCE section 10).

* ``serving``: an inference-only SavedModel, ``<task>-serving/``. The fine-tunable SavedModel keeps
  its weights as variables (``hub.KerasLayer(trainable=True)`` needs them); oneDNN then re-lays out
  every conv's weights on every call, which made B1g4 at batch 1 about 1.9x slower than with the
  weights as graph constants (``benchmarks/kernels.py``). This one holds them as constants, stored
  once in ``saved_model.pb``, and has ``serving_default`` only: what TF Serving and other
  serve-only processes load. Its ``variables/`` folder is empty but present, as TF Serving expects.
* ``tflite``: LiteRT flatbuffer, ``<task>.tflite``, from TensorFlow's converter (``ai-edge-litert``
  is an interpreter only). Input ``images`` with dynamic batch and size, outputs named like the
  SavedModel's, fp32; run with XNNPACK, the interpreter's default.
* ``onnx``: ``<task>.onnx`` from tf2onnx (the ``onnx`` extra), opset :data:`ONNX_OPSET`, NHWC input
  ``images`` like the SavedModel's (one transpose inside, then NCHW convs), dynamic batch and size.
  It converts our raw ``tf.nn`` graph; Keras 3 grouped convs would not (an XLA ``tf.function``).

Every converted file is compared with its SavedModel in the build (``build._check``) before it
appears. TensorFlow is imported here; tf2onnx and the LiteRT interpreter only when used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import tensorflow as tf

from ..errors import BuildError, first_line
from .formats import INT8, ONNX, SERVING, TFLITE
from .frozen import freeze_serving

ONNX_OPSET = 17
#: The LiteRT interpreter's threads in the build's check (the machine's 2 cores).
TFLITE_THREADS = 2
#: Each format's bound against its SavedModel, ``rtol * max(1, max |out|)``, float32 rounding. A
#: serving SavedModel is the same graph with its variables folded into constants, but grappler then
#: folds and reorders constant arithmetic: 1e-6 did not hold (a fine-tuned A0's logits, all under 1
#: in size, differed by 1.3e-6), so it shares LiteRT's and onnxruntime's 1e-5.
DEPLOY_RTOL = {SERVING: 1e-5, TFLITE: 1e-5, ONNX: 1e-5}
ONNX_EXTRA = "pip install 'repvgg-registry[onnx]'"

Runner = Callable[[np.ndarray], dict[str, np.ndarray]]


def write_serving(folder: Path, target: Path) -> None:
    """``target``: the SavedModel in ``folder`` with every variable a graph constant
    (:func:`~.frozen.freeze_serving`, saved) and only ``serving_default``, returning the same dict."""
    frozen = freeze_serving(folder)
    (spec,) = frozen.inputs.values()

    @tf.function(input_signature=[tf.TensorSpec(spec.shape, spec.dtype, name="images")])
    def serve(images):
        return frozen(images)

    tf.saved_model.save(tf.Module(), str(target), signatures={"serving_default": serve})
    if (folder / "assets").is_dir():  # the classifier's labels.txt, which metadata.json points at
        shutil.copytree(folder / "assets", target / "assets", dirs_exist_ok=True)


def write_tflite(folder: Path, target: Path) -> None:
    """``target``: the fp32 LiteRT model of the SavedModel in ``folder`` (its ``serving_default``)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(folder), signature_keys=["serving_default"])
    target.write_bytes(_convert(converter, target))


def _convert(converter, target: Path) -> bytes:
    try:
        return converter.convert()
    except Exception as exc:  # the converter raises ConverterError, RuntimeError, ValueError...
        raise conversion_failed(target, "LiteRT", exc) from None


def conversion_failed(target: Path, converter: str, exc: BaseException) -> BuildError:
    """The one-line error of a conversion that raised: the file it was making and why."""
    return BuildError(f"{target.name}: the {converter} conversion failed ({first_line(exc)}); nothing was written")


def write_onnx(folder: Path, target: Path) -> None:
    """``target``: the ONNX model of the SavedModel in ``folder`` (tf2onnx, opset :data:`ONNX_OPSET`),
    converted in a child process: tf2onnx holds about 40 copies of the weights at its peak (B3g4:
    12 GB for a 300 MB model, 17 GB inside a process that has already built and converted it), and
    a process of its own gives all of that back when it ends. A failure is one line, as in-process."""
    import subprocess
    import sys

    command = [sys.executable, "-m", __name__, str(folder), str(target)]
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if proc.returncode == 0 and target.is_file():
        return
    target.unlink(missing_ok=True)
    lines = [line for line in proc.stderr.splitlines() if line.startswith(_FAILED)]
    if lines:
        raise BuildError(lines[-1].removeprefix(_FAILED))
    why = "killed, out of memory?" if proc.returncode < 0 else f"exit code {proc.returncode}"
    raise BuildError(
        f"{target.name}: the ONNX conversion stopped ({why}); nothing was written. "
        "Leave ONNX out with --formats serving,tflite"
    )


_FAILED = "repvgg-registry onnx: "


def _convert_onnx(folder: Path, target: Path) -> None:
    """The conversion itself, the way ``python -m tf2onnx.convert --saved-model`` does it, so its
    input and outputs keep the signature's names."""
    from tf2onnx import convert, tf_loader

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)  # it logs every optimiser pass at INFO
    try:
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            graph_def, inputs, outputs, tables, renames = tf_loader.from_saved_model(
                str(folder),
                None,
                None,
                "serve",
                ["serving_default"],
                return_initialized_tables=True,
                return_tensors_to_rename=True,
            )
            convert._convert_common(
                graph_def,
                name=target.stem,
                opset=ONNX_OPSET,
                input_names=inputs,
                output_names=outputs,
                tensors_to_rename=renames,
                initialized_tables=tables,
                output_path=str(target),
            )
    except Exception as exc:
        target.unlink(missing_ok=True)
        raise conversion_failed(target, "ONNX", exc) from None


WRITERS: dict[str, Callable[[Path, Path], None]] = {SERVING: write_serving, TFLITE: write_tflite, ONNX: write_onnx}


class SavedModelRunner:
    """``images -> {output key: array}`` through a SavedModel's ``serving_default``. It holds the
    loaded object: a signature alone does not keep it, and its variables go with it."""

    def __init__(self, folder: Path) -> None:
        self.loaded = tf.saved_model.load(str(folder))
        self.signature = self.loaded.signatures["serving_default"]

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return {key: value.numpy() for key, value in self.signature(images=tf.constant(images)).items()}


savedmodel_runner = SavedModelRunner  # named like the other runners: RUNNERS[fmt](path)


def tflite_runner(path: Path, *, threads: int = TFLITE_THREADS) -> Runner:
    """``images -> {output key: array}`` through the ``ai-edge-litert`` interpreter (XNNPACK, its
    default), resizing its input to each batch as a user would."""
    from ai_edge_litert.interpreter import Interpreter

    with quiet_stderr():  # LiteRT's C++ logs "INFO: Created TensorFlow Lite XNNPACK delegate" to fd 2
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        run = interpreter.get_signature_runner("serving_default")
    return lambda images: {key: np.asarray(value) for key, value in run(images=images).items()}


@contextlib.contextmanager
def quiet_stderr():
    """File descriptor 2 points at /dev/null for the block (C++ logging bypasses sys.stderr)."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def onnx_runner(path: Path, *, threads: int = TFLITE_THREADS) -> Runner:
    """``images -> {output key: array}`` through onnxruntime's CPU provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return lambda images: dict(zip(names, session.run(names, {"images": images}), strict=True))


RUNNERS: dict[str, Callable[[Path], Runner]] = {
    SERVING: savedmodel_runner,
    TFLITE: tflite_runner,
    INT8: tflite_runner,
    ONNX: onnx_runner,
}
_TOOLS = {SERVING: ("tensorflow",), TFLITE: ("tensorflow", "ai_edge_litert"), ONNX: ("tf2onnx", "onnxruntime")}


def runtime_versions(formats: Iterable[str]) -> dict[str, str]:
    """The converters and runtimes a build used for ``formats``, with their versions."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in sorted({tool for fmt in formats for tool in _TOOLS[fmt]}):
        with contextlib.suppress(PackageNotFoundError):
            versions[name] = version(name.replace("_", "-"))
    return versions


if __name__ == "__main__":  # write_onnx's child: python -m repvgg_registry.publish.deploy SAVED_MODEL TARGET
    import sys

    try:
        _convert_onnx(Path(sys.argv[1]), Path(sys.argv[2]))
    except BuildError as error:
        print(f"{_FAILED}{error}", file=sys.stderr)
        raise SystemExit(2) from None
