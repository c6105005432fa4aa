"""Turn a variant and its weights into every artifact of a release, checked before they appear.

Phases: build (train form, ImageNet normalisation inside, at the output stride asked for),
weights, fuse, export (the three TF Hub SavedModels and the four ``.keras`` files into a staging
folder), check (reload everything from disk: each SavedModel against the train form at the default
size and a non-square size, every feature map included, each fused ``.keras`` against its
SavedModel, ``train.keras`` against ``classification.keras``). Only a build that passes the check
is renamed into place, so a failed build leaves nothing behind.

A build folder::

    feature_vector/ classification/ feature_maps/   TF Hub Reusable SavedModels (hub.KerasLayer)
    feature_vector.keras classification.keras       the same fused networks (keras.saving.load_model)
    feature_maps.keras
    train.keras                                     the multi-branch train form with its head
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .. import __version__
from ..errors import BuildError, first_line
from ..variants.blocks import POOL
from ..variants.complexity import count_macs, count_params
from ..variants.equivalence import RTOL, compare_outputs
from ..variants.fusion import fuse
from ..variants.graph import feature_maps_of
from ..variants.table import IMAGENET_MEAN, IMAGENET_STD, VariantSpec, check_output_stride, get_variant
from ..variants.weights import LoadedWeights, WeightsSource
from .card import model_card, serving_card
from .deploy import DEPLOY_RTOL, RUNNERS, WRITERS, runtime_versions, savedmodel_runner, tflite_runner
from .formats import INT8, ONNX, SERVING, TFLITE, resolve_formats
from .hub_module import RepVGGHubModule
from .int8 import agreement, calibration_files, load_images, split, write_int8
from .labels import IMAGENET, ClassNames, class_names
from .release import staged_files
from .tasks import FEATURE_MAPS, KERAS_TASKS, OUTPUT_KEYS, TASKS, TRAIN, describe_output, serving_task

LICENSE = "MIT"
#: A ``.keras`` file and the SavedModel of its task hold the same fused weights in two
#: implementations (Keras layers; raw ``tf.nn`` ops with 1/std folded into the stem): they agree to
#: float32 rounding, far tighter than the fusion bound. (The converted files' bounds: DEPLOY_RTOL.)
FORMAT_RTOL = 1e-5


class Reporter:
    """Progress hooks; the CLI passes a rich implementation, the library default is silent."""

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        yield

    def warn(self, message: str) -> None:
        """A one-line note that does not stop the build (a format left out)."""


@dataclass
class BuildResult:
    variant: str
    out_dir: Path
    artifacts: dict[str, Path]
    metadata: dict[str, dict]
    max_abs_diff: float  # the logits' (check-fusion's figure); each task's own is in its metadata.json
    timings: dict[str, float] = field(default_factory=dict)
    #: ``{task: path}`` of the ``.keras`` files: the three fused tasks and ``train``
    keras_files: dict[str, Path] = field(default_factory=dict)
    #: ``{task: parameter count}`` of the models in those files
    keras_params: dict[str, int] = field(default_factory=dict)
    #: ``{task: {format: path}}`` of the deployment files (publish/formats.py), int8 as ``tflite_int8``
    deploy_files: dict[str, dict[str, Path]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The summary ``build --json`` prints (and, as ``artifact_rows``, its table)."""
        return {
            "variant": self.variant,
            "out": str(self.out_dir),
            "artifacts": {task: str(path) for task, path in self.artifacts.items()},
            "keras": {task: str(path) for task, path in self.keras_files.items()},
            "deploy": {task: {fmt: str(p) for fmt, p in files.items()} for task, files in self.deploy_files.items()},
            "artifact_rows": [
                {
                    "task": task,
                    "path": str(path),
                    "params": self.metadata[task]["params"],
                    "output": describe_output(self.metadata[task]["output"]),
                }
                for task, path in self.artifacts.items()
            ]
            + [
                {
                    "task": task if fmt != SERVING else serving_task(task),
                    "path": str(path),
                    "params": self.metadata[task]["params"],
                    "output": describe_output(self.metadata[task]["output"]),
                }
                for task, files in self.deploy_files.items()
                for fmt, path in files.items()
            ]
            + [
                {
                    "task": task,
                    "path": str(path),
                    "params": self.keras_params[task],
                    "output": describe_output(self.metadata.get(task, self.metadata["classification"])["output"]),
                }
                for task, path in self.keras_files.items()
            ],
            "max_abs_diff": self.max_abs_diff,
            "weights": self.metadata["classification"]["weights"],
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }


def check_sizes(spec: VariantSpec) -> list[tuple[int, int]]:
    """The default square size and a non-square one (3/4 of the height)."""
    size = spec.input_size
    return [(size, size), (size * 3 // 4, size)]


def _weights_record(loaded: LoadedWeights | None, source: str, seed: int) -> dict:
    if loaded is None:
        return {"source": "random", "seed": seed, "sha256": None, "scheme": None, "form": None}
    return {
        "source": source if source == "timm" else Path(loaded.path).name,
        "file": Path(loaded.path).name,
        "sha256": loaded.sha256,
        "scheme": loaded.scheme,
        "form": loaded.form,
    }


def artifact_metadata(
    spec: VariantSpec,
    task: str,
    weights: dict,
    max_abs_diff: float,
    num_classes: int,
    *,
    labels_source: str = IMAGENET,
    name: str | None = None,
    has_train_form: bool = True,
    output_stride: int = 32,
) -> dict:
    """Everything a consumer or the registry needs to know about one artifact. ``name``: the model
    name it is published under (default the variant's); ``labels_source``: ``imagenet-1k`` or the
    labels file's name; ``has_train_form``: False for a deploy-form source (no ``train.keras``);
    ``output_stride``: 32, or 16/8 with the last stages dilated (each map's real stride is listed)."""
    size = spec.input_size
    top = task == "classification"
    imagenet = labels_source == IMAGENET
    if task == FEATURE_MAPS:
        output = {
            "name": FEATURE_MAPS,
            "maps": [level.to_dict() for level in spec.feature_levels(output_stride)],
            "output_stride": output_stride,
            "layout": "NHWC",
        }
    elif top:
        output = {
            "name": "logits",
            "num_classes": num_classes,
            "background_class": False,
            "labels": "assets/labels.txt",
            "labels_source": labels_source,
        }
    else:
        output = {"name": "feature_vector", "num_features": spec.num_features}

    def macs(size: int) -> int:
        return count_macs(spec, size, include_top=top, num_classes=num_classes, output_stride=output_stride)

    return {
        "format": "tf-hub-reusable-savedmodel",
        "variant": spec.name,
        "base_variant": spec.name,
        "name": name or spec.hub_name,
        "display_name": spec.display_name,
        "task": task,
        "form": "fused",
        "input": {
            "name": "images",
            "dtype": "float32",
            "shape": [None, None, None, 3],
            "range": [0.0, 1.0],
            "channels": "RGB",
            "default_size": size,
            "crop_pct": spec.crop_pct,
            "resize_to": spec.resize_to,
            "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "inside_model": True},
        },
        "output": output,
        "output_stride": output_stride,
        "signature": {"serving_default": {"inputs": ["images"], "outputs": list(OUTPUT_KEYS[task])}},
        "weights": weights,
        "fusion": {
            "max_abs_diff": max_abs_diff,
            "rtol": RTOL,
            "reference": "train-time multi-branch form" if has_train_form else "the deploy-form source itself",
            "train_form": has_train_form,
        },
        "params": count_params(spec, "deploy", include_top=top, num_classes=num_classes),
        "gmacs_224": round(macs(224) / 1e9, 4),
        "gmacs_default": round(macs(size) / 1e9, 4),
        # the paper's ImageNet top-1 describes the plain network with an ImageNet head, not a
        # fine-tuned or dilated one
        "top1": spec.top1_paper if imagenet and num_classes == spec.num_classes and output_stride == 32 else None,
        "license": LICENSE,
        "tool": {
            "repvgg_registry": __version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
    }


def _differs(what: str, reference, candidate, size: tuple[int, int], *, rtol: float = RTOL) -> float:
    """The max abs diff of two outputs, or BuildError naming ``what`` when it is over the bound."""
    diff, _, tol = compare_outputs(reference, candidate, rtol=rtol)
    if not np.isfinite(diff) or diff > tol:
        raise BuildError(f"{what} at {size[0]}x{size[1]}: max abs diff {diff:.3e} > {tol:.3e}; nothing was written")
    return diff


def _named(task: str, result) -> dict[str, np.ndarray]:
    """``{output key: array}`` of a task from a model's or a signature's result (a dict for
    feature maps and for :func:`all_outputs`)."""
    if isinstance(result, dict):
        return {key: np.asarray(result[key]) for key in OUTPUT_KEYS[task]}
    return {OUTPUT_KEYS[task][0]: np.asarray(result)}


def all_outputs(model: keras.Model, name: str) -> keras.Model:
    """One model with every task's outputs of a classifier (its :func:`task_views`), keyed like
    the signatures (:data:`OUTPUT_KEYS`): one forward pass gives the reference of all three
    SavedModels."""
    outputs = {}
    for task, view in task_views(model, name).items():
        found = view.output
        outputs.update(found if isinstance(found, dict) else {OUTPUT_KEYS[task][0]: found})
    return keras.Model(model.input, outputs, name=name)


def _check(
    artifacts: dict[str, Path],
    keras_files: dict[str, Path],
    source: keras.Model,
    against: str,
    spec: VariantSpec,
    seed: int,
) -> dict[str, float]:
    """Reload every artifact from disk (the ``.keras`` files in safe mode, as a user would) and
    compare every output of a task (each feature map) on its own.

    Each SavedModel (an implementation of its own, raw ``tf.nn`` ops) is compared with the
    ``source`` model in memory (the train form: the fusion bound; a deploy-form source: itself) at
    the default size and a non-square one, where padding rules would show. Each fused ``.keras``
    is the source's own Keras layers, fused: what the comparison with its SavedModel
    (:data:`FORMAT_RTOL`) proves is that the file reloads to the same network, so it runs at the
    default size only, as does ``train.keras`` against ``classification.keras`` (the fusion
    bound). Returns each task's worst source-vs-artifact diff (its own: unpooled maps are larger
    than logits)."""
    rng = np.random.default_rng(seed)
    served_by = {
        task: tf.saved_model.load(str(folder)).signatures["serving_default"] for task, folder in artifacts.items()
    }
    reloaded = {}
    for task, path in keras_files.items():
        try:
            reloaded[task] = keras.saving.load_model(path)
        except Exception as exc:  # what a user's load_model would raise: the file is not portable
            raise BuildError(
                f"{path.name} does not reload with keras.saving.load_model ({first_line(exc)}); nothing was written"
            ) from None
    name = spec.display_name
    reference_model = all_outputs(source, f"{source.name}_reference")
    worst = dict.fromkeys(served_by, 0.0)
    for index, size in enumerate(check_sizes(spec)):
        images = rng.random((2, *size, 3), dtype=np.float32)
        references = reference_model(images, training=False)
        for task, serve in served_by.items():
            served = _named(task, serve(images=tf.constant(images)))
            reference = _named(task, references)
            from_keras = _named(task, reloaded[task](images, training=False)) if index == 0 else {}
            for key, value in served.items():
                which = "" if len(served) == 1 else f" ({key})"  # a feature map
                diff = _differs(
                    f"{name} {task} artifact{which} differs from the {against}", reference[key], value, size
                )
                worst[task] = max(worst[task], diff)
                if key in from_keras:
                    _differs(
                        f"{name} {task}.keras differs from the {task} SavedModel{which}",
                        value,
                        from_keras[key],
                        size,
                        rtol=FORMAT_RTOL,
                    )
        if TRAIN not in reloaded or index > 0:
            continue
        logits = np.asarray(reloaded["classification"](images, training=False))
        train_logits = np.asarray(reloaded[TRAIN](images, training=False))
        diff = _differs(f"{name} {TRAIN}.keras differs from classification.keras", train_logits, logits, size)
        worst["classification"] = max(worst["classification"], diff)
    return worst


def _check_deployed(
    artifacts: dict[str, Path], converted: dict[str, dict[str, Path]], spec: VariantSpec, seed: int
) -> dict[str, dict[str, float]]:
    """Run every converted file (``converted``: ``{task: {format: path}}``) in its own runtime and
    compare each output with the task's SavedModel at both check sizes, within the format's
    :data:`DEPLOY_RTOL`. Returns ``{task: {format: max abs diff}}``."""
    rng = np.random.default_rng(seed + 1)
    found: dict[str, dict[str, float]] = {}
    for task, files in converted.items():
        reference = savedmodel_runner(artifacts[task])
        runners = {fmt: RUNNERS[fmt](path) for fmt, path in files.items()}
        found[task] = dict.fromkeys(files, 0.0)
        for size in check_sizes(spec):
            images = rng.random((2, *size, 3), dtype=np.float32)
            expected = reference(images)
            for fmt, run in runners.items():
                name = files[fmt].name
                got = run(images)
                if set(got) != set(expected):
                    raise BuildError(
                        f"{name} gives outputs {sorted(got)}, its SavedModel {sorted(expected)}; nothing was written"
                    )
                for key, value in expected.items():
                    which = "" if len(expected) == 1 else f" ({key})"
                    diff = _differs(
                        f"{spec.display_name} {name}{which} differs from the {task} SavedModel",
                        value,
                        got[key],
                        size,
                        rtol=DEPLOY_RTOL[fmt],
                    )
                    found[task][fmt] = max(found[task][fmt], diff)
    return found


def deployed_paths(folder: Path, task: str, formats: tuple[str, ...]) -> dict[str, Path]:
    """``{format: path}`` of the files each format makes of ``task`` in a build ``folder``."""
    files = staged_files(folder, task)
    where = {SERVING: folder / serving_task(task), TFLITE: files.tflite, ONNX: files.onnx}
    return {fmt: where[fmt] for fmt in formats}


def _pooled_model(model: keras.Model, name: str) -> keras.Model:
    """``model`` up to its pooled features (layer ``pool``), without the head."""
    return keras.Model(model.input, model.get_layer(POOL).output, name=name)


def task_views(model: keras.Model, model_name: str) -> dict[str, keras.Model]:
    """The model of each SavedModel task, as views of one classifier sharing its weights: itself,
    its pooled features and its feature maps."""
    base = f"repvgg_{model_name}_"
    return {
        "feature_vector": _pooled_model(model, f"{base}feature_vector"),
        "classification": model,
        FEATURE_MAPS: feature_maps_of(model, name=f"{base}{FEATURE_MAPS}"),
    }


def save_keras_files(train: keras.Model | None, deploy: keras.Model, folder: Path, model_name: str) -> dict[str, Path]:
    """Write ``feature_vector.keras``, ``classification.keras``, ``feature_maps.keras`` (fused) and
    ``train.keras`` (when there is a train form) into ``folder``; every model takes RGB in [0, 1]
    (its ``normalize`` layer comes first)."""
    models = {**task_views(deploy, model_name), TRAIN: train}
    paths = {}
    for task in KERAS_TASKS:
        if models[task] is not None:
            paths[task] = staged_files(folder, task).keras
            models[task].save(paths[task])
    return paths


def build_artifacts(
    variant: VariantSpec | str,
    out_dir: str | os.PathLike,
    *,
    weights: str = "random",
    labels: str | os.PathLike | None = None,
    name: str | None = None,
    output_stride: int = 32,
    formats: Collection[str] | None = None,
    int8_calibration: str | os.PathLike | None = None,
    seed: int = 0,
    overwrite: bool = False,
    reporter: Reporter | None = None,
) -> BuildResult:
    """Build ``out_dir/{feature_vector,classification,feature_maps}`` (SavedModels) and
    ``out_dir/{feature_vector,classification,feature_maps,train}.keras`` for ``variant``.

    ``weights`` is ``random`` (seeded, reproducible), ``timm``, a checkpoint path or a ``.keras``
    file. The head follows the weights: a 10-class classifier gives 10 logits, named by
    ``labels`` (a file, one name per line; ImageNet-1k's names by default, for 1000 classes only).
    A deploy-form source is not fused (there is no train form) and gives no ``train.keras``.
    ``name``: the model name it will be published under (for metadata and cards).
    ``output_stride`` 16 or 8 builds every artifact with the last stage, or two, dilated (timm's
    rule, see :meth:`VariantSpec.layers`). ``formats``: the deployment formats converted from
    each SavedModel (publish/deploy.py): ``serving`` (``<task>-serving/``), ``tflite`` and ``onnx``;
    None for all of them (ONNX where its extra is installed), ``()`` for none.
    ``int8_calibration``: a folder of at least 32 JPEG/PNG images; adds ``<task>.int8.tflite``
    (full-integer PTQ, publish/int8.py) with its agreement with fp32 on images held out of the
    calibration. The output appears only after the reloaded artifacts match the source model and
    each converted file its SavedModel.
    """
    spec = get_variant(variant)
    output_stride = check_output_stride(output_stride)
    reporter = reporter or Reporter()
    formats = resolve_formats(formats, warn=getattr(reporter, "warn", None))
    calibration = held_out = None
    if int8_calibration is not None:  # read before minutes of work: a bad folder fails in seconds
        images = load_images(calibration_files(int8_calibration), spec.input_size, spec.resize_to)
        calibration, held_out = split(images)
    out_dir = Path(out_dir).expanduser()
    _check_out_dir(out_dir, overwrite)
    timings: dict[str, float] = {}

    def timed(name: str):
        @contextlib.contextmanager
        def run():
            start = time.perf_counter()
            with reporter.phase(name):
                yield
            timings[name] = time.perf_counter() - start

        return run()

    model_name = name or spec.hub_name
    with timed("build"):
        keras.utils.set_random_seed(seed)
        source = WeightsSource.open(spec, weights)
        names = class_names(source.num_classes, labels)  # before minutes of work
        model = source.build(
            include_preprocessing=True, output_stride=output_stride, name=f"repvgg_{model_name}_{source.form}"
        )
    with timed("weights"):
        loaded = source.fill(model)
    with timed("fuse"):
        train = model if source.form == "train" else None
        deploy = fuse(model, name=f"repvgg_{model_name}_classification") if train is not None else model
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent))
    except OSError as exc:
        raise BuildError(f"cannot create {out_dir}: {exc.strerror}; choose another --out") from None
    try:
        with timed("export"):
            artifacts = {}
            labels_dir = staging / ".labels"
            labels_dir.mkdir()
            class_files = _write_class_files(labels_dir, names)
            for task in TASKS:
                module = RepVGGHubModule(deploy, task, assets=class_files if task == "classification" else ())
                artifacts[task] = staging / task
                module.save(artifacts[task])
            keras_files = save_keras_files(train, deploy, staging, model_name)
        converted = {task: deployed_paths(staging, task, formats) for task in TASKS} if formats else {}
        int8_files = (
            {task: staged_files(staging, task).tflite_int8 for task in TASKS} if calibration is not None else {}
        )
        if converted or int8_files:
            with timed("convert"):
                for task, paths in converted.items():
                    for fmt, path in paths.items():
                        WRITERS[fmt](artifacts[task], path)
                for task, path in int8_files.items():
                    write_int8(artifacts[task], path, calibration)
        with timed("check"):
            against = "train form" if train is not None else "deploy-form source"
            worst = _check(artifacts, keras_files, model, against, spec, seed)
            deployed = _check_deployed(artifacts, converted, spec, seed)
            quantized = {
                task: _int8_record(artifacts[task], path, held_out, len(calibration), task == "classification")
                for task, path in int8_files.items()
            }
            record = _weights_record(loaded, str(weights), seed)
            metadata = {}
            for task, folder in artifacts.items():
                metadata[task] = artifact_metadata(
                    spec,
                    task,
                    record,
                    worst[task],
                    source.num_classes,
                    labels_source=names.source,
                    name=model_name,
                    has_train_form=train is not None,
                    output_stride=output_stride,
                )
                if task in deployed or task in quantized:
                    metadata[task]["deploy"] = _deploy_record(
                        converted.get(task, {}), deployed.get(task, {}), quantized.get(task)
                    )
                _write_meta(folder, metadata[task], model_card(metadata[task], labels=names.labels))
                if SERVING in converted.get(task, {}):
                    serving = serving_metadata(metadata[task])
                    _write_meta(converted[task][SERVING], serving, serving_card(serving))
        shutil.rmtree(labels_dir)
        _replace(staging, out_dir, overwrite)
    except (OSError, tf.errors.OpError) as exc:  # a full disk surfaces as either (SaveV2, write)
        shutil.rmtree(staging, ignore_errors=True)
        reason = getattr(exc, "strerror", None) or first_line(exc)
        raise BuildError(f"could not write the build in {out_dir.parent}: {reason}; nothing was written") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    final = {task: out_dir / task for task in artifacts}
    final_keras = {task: out_dir / path.name for task, path in keras_files.items()}
    params = {task: metadata[task]["params"] for task in TASKS}
    params[TRAIN] = count_params(spec, "train", include_top=True, num_classes=source.num_classes)
    deploy_files = {
        task: {fmt: out_dir / path.name for fmt, path in {**converted.get(task, {}), **extra}.items()}
        for task in TASKS
        for extra in [{INT8: int8_files[task]} if task in int8_files else {}]
        if converted.get(task) or extra
    }
    return BuildResult(
        spec.name, out_dir, final, metadata, worst["classification"], timings, final_keras, params, deploy_files
    )


def _deploy_record(paths: dict[str, Path], diffs: dict[str, float], int8: dict | None = None) -> dict:
    """metadata.json's ``deploy``: each converted file and its check against the SavedModel, the
    int8 model's agreement with fp32 (``tflite_int8``), and the runtime versions that ran them."""
    record = {
        fmt: {"file": path.name, "max_abs_diff": diffs[fmt], "rtol": DEPLOY_RTOL[fmt]} for fmt, path in paths.items()
    }
    used = tuple(paths)
    if int8 is not None:
        record[INT8] = int8
        used += (TFLITE,)
    record["runtimes"] = runtime_versions(used)
    return record


def _int8_record(folder: Path, path: Path, held_out: np.ndarray, calibrated: int, classifier: bool) -> dict:
    """The int8 model of one task measured against its SavedModel on the held-out images."""
    fp32 = savedmodel_runner(folder)(held_out)
    try:
        int8 = tflite_runner(path)(held_out)
    except Exception as exc:  # a converter bug can give a model the interpreter refuses
        raise BuildError(f"{path.name} does not run in LiteRT ({first_line(exc)}); nothing was written") from None
    found = agreement(fp32, int8, classifier=classifier)
    return {"file": path.name, "calibration_images": calibrated, "held_out_images": found.pop("images"), **found}


def serving_metadata(meta: dict) -> dict:
    """metadata.json of ``<task>-serving/``: its task's, as an inference-only SavedModel."""
    task = serving_task(meta["task"])
    serving = {k: v for k, v in meta.items() if k != "deploy"}
    check = meta["deploy"][SERVING]
    return {
        **serving,
        "format": "tf-serving-savedmodel",
        "task": task,
        "base_task": meta["task"],
        "fine_tunable": False,
        "signature": meta["signature"],
        "serving_check": {"against": f"{meta['task']} SavedModel", **{k: check[k] for k in ("max_abs_diff", "rtol")}},
    }


def _write_meta(folder: Path, meta: dict, card: str) -> None:
    (folder / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    (folder / "README.md").write_text(card)


def _write_class_files(folder: Path, names: ClassNames) -> list[Path]:
    """``labels.txt`` (and for ImageNet ``synsets.txt``) in ``folder``, for the classifier's assets/."""
    paths = []
    for file_name, text in names.files().items():
        paths.append(folder / file_name)
        paths[-1].write_text(text, encoding="utf-8")
    return paths


def is_build_folder(path: Path) -> bool:
    """A folder an earlier build wrote: one of the task folders with its metadata.json."""
    return path.is_dir() and any((path / task / "metadata.json").is_file() for task in TASKS)


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """``--overwrite`` replaces an earlier build, never a file or a folder of something else."""
    blocked = next((p for p in out_dir.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise BuildError(f"cannot create {out_dir}: {blocked} is a file, not a folder; choose another --out")
    if not out_dir.exists():
        return
    if not overwrite:
        raise BuildError(f"{out_dir} already exists; choose another --out or pass --overwrite")
    if not is_build_folder(out_dir):
        kind = "folder" if out_dir.is_dir() else "file"
        raise BuildError(
            f"{out_dir} is a {kind} but not an earlier build, and --overwrite only replaces builds; "
            "choose another --out"
        )


def _replace(staging: Path, out_dir: Path, overwrite: bool) -> None:
    """Move the staged build into place; an earlier build is swapped out only with ``overwrite``."""
    if out_dir.exists():
        _check_out_dir(out_dir, overwrite)
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.rename(out_dir, old)
        os.rename(staging, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staging, out_dir)
