"""The ``repvgg-registry`` command line: parses arguments, calls the library, renders the result.

Nothing else lives here: the figures come from ``variants``, builds from ``publish``, hubs from
``registry``. Every :class:`~repvgg_registry.errors.RegistryError` and every usage error becomes one
``error:`` line and exit code 2 in one place (:class:`_OneLineErrors`). TensorFlow is imported
inside the commands that need it, so ``--help`` and ``list`` start fast.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup, TyperOption

try:  # typer >= 0.20 vendors click; its exceptions are not the real click's
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - typer on the real click
    from click.exceptions import ClickException

from . import __version__
from .errors import RegistryError, UnknownVariantError, UsageError, first_line, one_line
from .progress import RichPhases
from .publish.formats import parse_formats, resolve_formats
from .publish.int8 import calibration_files
from .render import Column, fitted_table, millions, top1
from .variants.complexity import details, summary
from .variants.table import VARIANTS, check_output_stride, get_variant

# Piped output keeps whole rows instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 400)

#: Bounds that keep a typo from eating all memory (``--size 10000`` was OOM-killed).
MAX_SIDE = 1024
MAX_BATCH = 64
MAX_PIXELS = 64 * 224 * 224
MAX_SEED = 2**32 - 1


def _error(message: str) -> None:
    err_console.print(f"error: {one_line(message)}", markup=False, highlight=False, soft_wrap=True)


class _OneLineErrors(TyperGroup):
    """The CLI's one error root: package errors, usage errors and OS errors each become one line.

    Typer's own rendering draws a 3-6 line box for a usage error; library warnings add more. Here
    every failure a user can cause prints ``error: <what and how to fix it>`` and exits non-zero.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        code = 0
        with warnings.catch_warnings():
            # torch's pickle notice, numpy's RuntimeWarning...: our errors say what matters.
            warnings.simplefilter("ignore")
            try:
                result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
                code = result if isinstance(result, int) else 0
            except RegistryError as exc:
                _error(str(exc))
                code = exc.exit_code
            except ClickException as exc:
                command = exc.ctx.command_path if getattr(exc, "ctx", None) else "repvgg-registry"
                _error(f"{exc.format_message().rstrip('.')}; see '{command} --help'")
                code = exc.exit_code
            except typer.Abort:
                code = 130
            except OSError as exc:  # full disk, permissions: the OS's words, once
                where = f" ({exc.filename})" if exc.filename else ""
                _error(f"{exc.strerror or first_line(exc)}{where}; free space or fix permissions and rerun")
                code = 1
            except MemoryError:
                _error("out of memory; use a smaller --size or --batch")
                code = 1
        if standalone_mode:
            sys.exit(code)
        return code


_typer_display_type = TyperOption.display_type_rich


def _display_type(self: TyperOption, ctx) -> str | None:
    """No ``<bool>`` after a flag in ``--help``: a flag takes no value, and typer 0.29 prints its
    Python type there. (Patched on the class, in this CLI's process only.)"""
    return None if self.is_flag else _typer_display_type(self, ctx)


TyperOption.display_type_rich = _display_type  # type: ignore[method-assign]

app = typer.Typer(
    name="repvgg-registry",
    cls=_OneLineErrors,
    help="RepVGG networks for TensorFlow: build, fuse, check and publish them as TF Hub models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        console.print(f"repvgg-registry {__version__}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """RepVGG networks for TensorFlow: build, fuse, check and publish them as TF Hub models."""


# ----- options shared by several commands ---------------------------------------------------
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]
WeightsOption = Annotated[
    str,
    typer.Option(
        "--weights",
        "-w",
        metavar="SOURCE",
        help="'random', 'timm', a checkpoint path (.safetensors, .pth, .pt, .bin) or a .keras file.",
    ),
]
LabelsOption = Annotated[
    Path | None,
    typer.Option(
        "--labels",
        metavar="FILE",
        help="Class names, one per line (UTF-8), as many as the weights' classifier has outputs "
        "(default: ImageNet-1k's, for a 1000-class head).",
    ),
]
HubOption = Annotated[
    str | None,
    typer.Option(
        "--hub",
        metavar="PATH|hf://NS|kaggle://OWNER",
        help="Hub: a folder (default: $REPVGG_REGISTRY_HUB, else ~/.local/share/repvgg-registry/hub), "
        "hf://NAMESPACE for the Hugging Face Hub, or kaggle://OWNER for Kaggle Models (the kaggle extra).",
        show_default=False,
    ),
]
NamespaceOption = Annotated[str, typer.Option("--namespace", metavar="NAME", help="Handle namespace.")]
SeedOption = Annotated[int, typer.Option("--seed", metavar="N", help=f"Seed for random weights (0..{MAX_SEED}).")]
OutputStrideOption = Annotated[
    int,
    typer.Option(
        "--output-stride",
        metavar="32|16|8",
        help="Output stride: 16 runs the last stage at stride 1, 8 the last two, dilated as timm's "
        "output_stride does (for segmentation); every artifact is built that way.",
    ),
]
FormatsOption = Annotated[
    str | None,
    typer.Option(
        "--formats",
        metavar="LIST",
        help="Deployment files converted from each checked SavedModel, comma-separated: serving "
        "(<task>-serving/, weights as constants, for TF Serving), tflite (LiteRT), onnx (the onnx extra); "
        "none for none (default: all that are installed).",
        show_default=False,
    ),
]
Int8Option = Annotated[
    Path | None,
    typer.Option(
        "--int8-calibration",
        metavar="DIR",
        help="Add <task>.int8.tflite (full-integer LiteRT, float input and output), calibrated on the "
        "JPEG/PNG images in DIR (at least 32; a quarter held out to measure agreement with fp32).",
        show_default=False,
    ),
]
VariantArgument = Annotated[str, typer.Argument(metavar="VARIANT", help="Variant name, e.g. B3g4.")]


def _warn(message: str) -> None:
    err_console.print(f"warning: {one_line(message)}", markup=False, highlight=False, soft_wrap=True)


def _open_hub(location: str | None, namespace: str = "repvgg", *, private: bool = False):
    from .registry import open_hub

    hub = open_hub(location, namespace=namespace, private=private)
    hub.on_lock_wait = _warn  # a hub that locks says who holds the lock while a publish waits
    return hub


def _index_warnings(hub) -> None:
    """Entries of a hub's index that readers skipped: say so instead of hiding them."""
    for message in hub.index_warnings:
        _warn(message)


def _seed(seed: int) -> int:
    if not 0 <= seed <= MAX_SEED:
        raise UsageError("--seed", seed, f"use an integer from 0 to {MAX_SEED}")
    return seed


def _parse_size(size: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX*,]\s*(\d+))?\s*", size)
    if not match:
        raise UsageError("--size", size, "use N or HxW, for example 224 or 64x96")
    height = int(match.group(1))
    width = int(match.group(2) or height)
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise UsageError("--size", size, f"height and width must be from 1 to {MAX_SIDE}")
    return height, width


def _json_safe(value: Any) -> Any:
    """NaN and infinities are not JSON: they become null (the ``ok`` flag next to them says why)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _print_json(data) -> None:
    sys.stdout.write(json.dumps(_json_safe(data), indent=2, allow_nan=False) + "\n")


# ----- commands -----------------------------------------------------------------------------
@app.command("list")
def list_variants(as_json: JsonOption = False, hub: HubOption = None) -> None:
    """List every RepVGG variant with its shape, size, cost, reference accuracy and published models."""
    from .registry import published_by_variant

    target = _open_hub(hub)
    published, warning = published_by_variant(target)
    if warning:
        _warn(warning)
    _index_warnings(target)
    rows = [
        {
            **summary(spec),
            "published": published.get(spec.name, {}).get(spec.hub_name, []),
            "models": published.get(spec.name, {}),  # every model name built on it, --name ones too
        }
        for spec in VARIANTS
    ]
    if as_json:
        _print_json(rows)
        return
    columns = [
        Column("variant", lambda r: r["name"], priority=0),
        Column("blocks", lambda r: ",".join(map(str, r["blocks"])), priority=2),
        Column("widths", lambda r: ",".join(map(str, r["widths"])), priority=5),
        Column("groups", lambda r: str(r["groups"]), justify="right", priority=3),
        Column("SE", lambda r: "yes" if r["se"] else "-", justify="center", priority=4),
        Column("params train", lambda r: millions(r["params_train"]), justify="right", priority=6),
        Column("params", lambda r: millions(r["params_deploy"]), justify="right", priority=1),
        Column("GMACs", lambda r: f"{r['gmacs']:.2f}", justify="right", priority=1),
        Column("top-1", lambda r: top1(r["top1"]), justify="right", priority=1),
        Column("size", lambda r: str(r["input_size"]), justify="right", priority=7),
        Column("published", lambda r: _published_cell(r), priority=0, fold=True),
    ]
    console.print(fitted_table(console, "RepVGG variants (params deploy, GMACs at 224)", columns, rows))


def _published_cell(row: dict) -> str:
    """``v1,v2`` for the variant's own model name, then ``flowers-b0 v1`` for each model published
    on top of it under its own ``--name``."""

    def versions(numbers: list[int]) -> str:
        return ",".join(f"v{n}" for n in numbers)

    own_name = get_variant(row["name"]).hub_name
    parts = [versions(row["published"])] if row["published"] else []
    parts += [f"{name} {versions(numbers)}" for name, numbers in sorted(row["models"].items()) if name != own_name]
    return " ".join(parts) or "-"


@app.command()
def show(variant: VariantArgument, as_json: JsonOption = False) -> None:
    """Show one variant stage by stage."""
    spec = get_variant(variant)
    info = details(spec)
    if as_json:
        _print_json(info)
        return
    console.print(f"[bold]{spec.display_name}[/bold]  {spec.notes}")
    console.print(
        f"params train {millions(info['params_train'])}, deploy {millions(info['params_deploy'])}; "
        f"{info['gmacs']:.2f} GMACs at 224, {info['default_gmacs']:.2f} at {spec.input_size}; "
        f"top-1 paper {top1(spec.top1_paper)} / timm {top1(spec.top1_timm)}; "
        f"eval {spec.input_size}px crop {spec.crop_pct}; timm name {spec.timm_name or '-'}"
    )
    columns = [
        Column("stage", lambda s: s["name"], priority=0),
        Column("blocks", lambda s: str(s["blocks"]), justify="right", priority=0),
        Column("in", lambda s: str(s["in_channels"]), justify="right", priority=1),
        Column("out", lambda s: str(s["out_channels"]), justify="right", priority=0),
        Column("stride", lambda s: "2 (first)", justify="right", priority=3),
        Column("groups", lambda s: str(s["groups"]), justify="right", priority=1),
        Column("grouped blocks", lambda s: ",".join(map(str, s["grouped_blocks"])) or "-", priority=2, fold=True),
        Column("identity", lambda s: str(s["identity_blocks"]), justify="right", priority=2),
        Column("SE", lambda s: str(s["se_channels"] or "-"), justify="right", priority=1),
    ]
    console.print(fitted_table(console, None, columns, info["stages"]))


@app.command("check-fusion")
def check_fusion(
    variant: VariantArgument,
    size: Annotated[str, typer.Option("--size", metavar="N|HxW", help=f"Input size, 1..{MAX_SIDE}.")] = "64",
    batch: Annotated[int, typer.Option("--batch", metavar="N", help=f"Images per batch, 1..{MAX_BATCH}.")] = 2,
    weights: WeightsOption = "random",
    seed: SeedOption = 0,
    as_json: JsonOption = False,
) -> None:
    """Fuse the train form into the deploy form and prove both give the same logits."""
    spec = get_variant(variant)
    height, width = _parse_size(size)
    if not 1 <= batch <= MAX_BATCH:
        raise UsageError("--batch", batch, f"use 1 to {MAX_BATCH} images")
    if batch * height * width > MAX_PIXELS:
        raise UsageError("--size", size, f"{batch} x {height}x{width} is too large; keep batch x H x W <= {MAX_PIXELS}")
    _seed(seed)
    _fetch(weights, [spec])
    from .variants.equivalence import check_fusion as run_check

    with console.status(f"building {spec.display_name}, fusing and comparing at {height}x{width}"):
        result = run_check(spec, height, width, batch=batch, weights=weights, seed=seed)
    if as_json:
        _print_json(result.to_dict())
    else:
        verdict = "[green]OK[/green]" if result.ok else "[red]MISMATCH[/red]"
        console.print(
            f"{verdict} {spec.display_name} {height}x{width}: max |train - deploy| = {result.max_abs_diff:.3e}, "
            f"max |logit| = {result.max_abs_logit:.3e}, tolerance {result.tolerance:.3e}"
        )
    if not result.ok:
        raise typer.Exit(1)


@app.command("inspect-weights")
def inspect_weights(
    path: Annotated[
        str, typer.Argument(metavar="FILE", help="Checkpoint file: .safetensors, .pth, .pt, .bin or .keras.")
    ],
    as_json: JsonOption = False,
) -> None:
    """Say what a checkpoint holds: key scheme, form, the variant it fits, tensor count."""
    from .variants.checkpoints import inspect_checkpoint

    if path.lower() in ("random", "timm"):
        raise UsageError(
            "FILE",
            path,
            "inspect-weights reads a checkpoint file; 'random' and 'timm' are weights sources for "
            "build, publish and check-fusion: pass the path of a .safetensors, .pth, .pt or .bin file",
        )
    if path.lower().endswith(".keras"):  # a Keras model: only Keras reads it, so TensorFlow loads
        from .variants.checkpoints import existing_file

        existing_file(path)  # a typo answers before TensorFlow's seconds of start-up
        _quiet_tensorflow()
        from .variants.weights import inspect_keras

        info = inspect_keras(path)
    else:
        _torch_before_tensorflow(path, tensorflow=False)
        info = inspect_checkpoint(path)
    if as_json:
        _print_json(info.to_dict())
    else:
        columns = [
            Column("key", lambda kv: kv[0], priority=0),
            Column("value", lambda kv: kv[1], priority=0, fold=True),
        ]
        rows = [(k, "-" if v is None else str(v)) for k, v in info.to_dict().items()]
        console.print(fitted_table(console, f"checkpoint {path}", columns, rows, show_header=False))
    info.raise_if_unfit()


@app.command()
def build(
    variant: VariantArgument,
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="DIR", help="Folder to create (SavedModels and .keras files).")
    ],
    weights: WeightsOption = "timm",
    labels: LabelsOption = None,
    output_stride: OutputStrideOption = 32,
    formats: FormatsOption = None,
    int8_calibration: Int8Option = None,
    seed: SeedOption = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier build in --out.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Build a variant's artifacts: the fused TF Hub SavedModels (feature vector, classifier,
    feature maps), the same networks as .keras files, train.keras (the train form), and the
    deployment files (LiteRT, ONNX, inference-only SavedModels)."""
    spec = get_variant(variant)
    check_output_stride(output_stride, "--output-stride")
    chosen = resolve_formats(parse_formats(formats), warn=_warn)
    if int8_calibration is not None:
        calibration_files(int8_calibration)
    _seed(seed)
    _check_labels(labels)
    _fetch(weights, [spec])
    from .publish.build import build_artifacts

    with RichPhases(spec.display_name, console=err_console) as reporter:
        result = build_artifacts(
            spec,
            out,
            weights=weights,
            labels=labels,
            output_stride=output_stride,
            formats=chosen,
            int8_calibration=int8_calibration,
            seed=seed,
            overwrite=overwrite,
            reporter=reporter,
        )
    summary_rows = result.to_dict()
    if as_json:
        _print_json(summary_rows)
        return
    columns = [
        Column("task", lambda a: a["task"], priority=0),
        Column("path", lambda a: a["path"], priority=0, fold=True),
        Column("params", lambda a: f"{a['params']:,}", justify="right", priority=2),
        Column("output", lambda a: a["output"], priority=1),
    ]
    console.print(fitted_table(console, f"built {spec.display_name}", columns, summary_rows["artifact_rows"]))
    console.print(
        f"check: max abs diff vs the train form {result.max_abs_diff:.2e}; "
        + ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
    )


@app.command()
def publish(
    variants: Annotated[
        list[str] | None, typer.Argument(metavar="VARIANT", help="Variants to publish, e.g. A0 B3g4.")
    ] = None,
    all_variants: Annotated[bool, typer.Option("--all", help="Publish every variant.")] = False,
    hub: HubOption = None,
    namespace: NamespaceOption = "repvgg",
    weights: WeightsOption = "timm",
    labels: LabelsOption = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            metavar="NAME",
            help="Model name to publish under (default: the variant's, e.g. a0, or a0-os16 at "
            "--output-stride 16); one variant only.",
        ),
    ] = None,
    output_stride: OutputStrideOption = 32,
    formats: FormatsOption = None,
    int8_calibration: Int8Option = None,
    version: Annotated[
        int | None, typer.Option("--version", metavar="N", help="Version number (default: the next one).")
    ] = None,
    private: Annotated[
        bool, typer.Option("--private", help="Create missing Hugging Face repos and Kaggle models as private.")
    ] = False,
    seed: SeedOption = 0,
    as_json: JsonOption = False,
) -> None:
    """Build, check and publish variants as the next immutable version in a hub."""
    from .registry.hub import default_model_name, validate_name, validate_version

    if all_variants:
        specs = list(VARIANTS)
    elif variants:
        specs = [get_variant(name) for name in variants]
    else:
        raise UsageError("VARIANT", "", "name at least one variant, or pass --all")
    validate_version(version)
    check_output_stride(output_stride, "--output-stride")
    chosen = resolve_formats(parse_formats(formats), warn=_warn)
    if int8_calibration is not None:
        calibration_files(int8_calibration)
    if name is not None:
        if len(specs) > 1:
            raise UsageError("--name", name, "names one model: publish one variant with it")
        name = validate_name(name, "model name")
    _seed(seed)
    _check_labels(labels)
    target = _open_hub(hub, namespace, private=private)
    # Everything that can refuse the commit (credentials, a taken version, a corrupt index) is
    # asked before minutes of build work.
    try:
        for spec in specs:
            target.preflight(
                name or default_model_name(spec.name, output_stride), version=version, base_variant=spec.name
            )
        if len(specs) == 1:  # with several, a bad source fails per variant and the others go on
            _fetch(weights, specs)
        else:
            _torch_before_tensorflow(weights)
    except RegistryError as exc:
        _error(str(exc))
        if not as_json:
            console.print(f"nothing published to {target.location}", markup=False, highlight=False)
        raise typer.Exit(exc.exit_code) from None

    outcomes = target.publish_many(
        [spec.name for spec in specs],
        weights=weights,
        labels=labels,
        name=name,
        output_stride=output_stride,
        formats=chosen,
        int8_calibration=int8_calibration,
        version=version,
        seed=seed,
        reporter_for=lambda name: RichPhases(name, console=err_console),
        on_error=lambda outcome: _error(f"{outcome.variant}: {outcome.error}"),
    )
    if as_json:
        _print_json([o.to_dict() for o in outcomes])
    else:
        done = [o for o in outcomes if o.ok]
        if done:
            columns = [
                Column("variant", lambda o: o.variant, priority=0),
                Column("version", lambda o: str(o.version), justify="right", priority=1),
                Column("handles", lambda o: "\n".join(o.handles), priority=0, fold=True),
                Column("time", lambda o: f"{o.seconds:.1f}s", justify="right", priority=2),
            ]
            console.print(fitted_table(console, f"published to {target.location}", columns, done))
        failed = [o.variant for o in outcomes if not o.ok]
        if not done:
            console.print(f"nothing published to {target.location}", markup=False, highlight=False)
        elif failed:
            console.print(f"not published: {', '.join(failed)} (see the errors above)", markup=False, highlight=False)
    failed = [o for o in outcomes if not o.ok]
    if failed:  # one variant: its error's code (2 for bad input); several: 1, some may have gone through
        raise typer.Exit(failed[0].exit_code if len(outcomes) == 1 else 1)


@app.command()
def versions(
    model: Annotated[
        str, typer.Argument(metavar="MODEL", help="Variant name (e.g. A0) or a model published with --name.")
    ],
    hub: HubOption = None,
    namespace: NamespaceOption = "repvgg",
    as_json: JsonOption = False,
) -> None:
    """List the published versions of a variant or a named model, per task."""
    from .registry.hub import is_valid_name

    try:
        spec = get_variant(model)
        key, title = spec.hub_name, spec.display_name
    except UnknownVariantError as exc:
        if not is_valid_name(model.lower()):
            raise
        key, title, unknown = model.lower(), model.lower(), exc
    else:
        unknown = None
    target = _open_hub(hub, namespace)
    found = target.versions(key)
    _index_warnings(target)
    if not found and unknown is not None:  # no variant and no model: most likely a typo of a variant
        raise unknown from None
    if as_json:
        _print_json([v.to_dict() for v in found])
        return
    if not found:
        console.print(f"{title}: nothing published yet")
        return
    columns = [
        # the handle already says task and version: those columns go first when the terminal is narrow
        Column("handle", lambda v: str(v.handle), priority=0, fold=True),
        Column("task", lambda v: v.handle.task, priority=5),
        Column("version", lambda v: str(v.handle.version), justify="right", priority=6),
        Column("created", lambda v: v.created, priority=2),
        Column("weights", lambda v: v.weights_source, priority=1, fold=True),
        Column("sha256", lambda v: v.sha256[:16], priority=3),
    ]
    console.print(fitted_table(console, f"{title} versions", columns, found))


@app.command()
def verify(
    target: Annotated[
        str,
        typer.Argument(
            metavar="HANDLE|DIR",
            help="A handle (repvgg/a0/feature_vector/1), a published version folder, or a build --out folder.",
        ),
    ],
    hub: HubOption = None,
    namespace: NamespaceOption = "repvgg",
    as_json: JsonOption = False,
) -> None:
    """Recompute every checksum of a published version, load it and check its signature."""
    _quiet_tensorflow()
    report = _open_hub(hub, namespace).verify(target)
    if as_json:
        _print_json(report.to_dict())
    elif report.ok:
        console.print(f"[green]OK[/green] {one_line(target)}: {report.describe()}")
    if not report.ok:
        if not as_json:
            more = f" (+{len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
            _error(f"{target}: {report.problems[0]}{more}")
        raise typer.Exit(1)


@app.command()
def repair(
    hub: HubOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would change; change nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Rebuild a local hub's index.json from the manifests of its published versions."""
    from .registry import LocalHub

    target = _open_hub(hub)
    if not isinstance(target, LocalHub):
        raise UsageError("--hub", hub, "repair works on a local hub folder; pass --hub PATH")
    report = target.repair(dry_run=dry_run)
    if as_json:
        _print_json(report.to_dict())
    else:
        console.print(report.describe())


@app.command()
def serve(
    hub: HubOption = None,
    host: Annotated[str, typer.Option("--host", metavar="ADDRESS", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="N", help="Port to bind (0..65535).")] = 8000,
    workers: Annotated[int, typer.Option("--workers", metavar="N", help="Worker processes (1..64).")] = 1,
) -> None:
    """Serve a local hub over HTTP so that hub.KerasLayer("http://HOST:PORT/<handle>") works."""
    if not 0 <= port <= 65535:
        raise UsageError("--port", port, "use a port from 0 to 65535")
    if not 1 <= workers <= 64:
        raise UsageError("--workers", workers, "use 1 to 64 worker processes")
    from .registry import LocalHub
    from .registry.server import run_server

    target = _open_hub(hub)
    if not isinstance(target, LocalHub):
        raise UsageError("--hub", hub, "serve works on a local hub folder; pass --hub PATH")
    target.root.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            run_server(target.root, host, port, workers=workers)
    except OSError as exc:
        raise UsageError(
            "--port", port, f"cannot bind {host}:{port} ({exc.strerror or exc}); pick another --port"
        ) from None


def _check_labels(labels: Path | None) -> None:
    """A labels file that cannot be read answers before TensorFlow starts (its count is checked
    against the classifier once the weights are open)."""
    if labels is not None:
        from .publish.labels import read_labels_file

        read_labels_file(labels)


# ----- TensorFlow and torch start-up --------------------------------------------------------
def _fetch(weights: str, specs: list) -> None:
    """Download or find the weights before TensorFlow's seconds of start-up, so that an offline
    machine or a typo in a path answers at once; then import torch and TensorFlow in that order."""
    from .variants.checkpoints import fetch_weights

    for spec in specs:
        fetch_weights(weights, spec)
    _torch_before_tensorflow(weights)


def _quiet_tensorflow() -> None:
    """Import TensorFlow with native stderr muted: TF 2.21 logs oneDNN and CUDA probes through
    absl before any log level applies, which would bury our one-line errors."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe logs on first use
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _torch_before_tensorflow(source: str, *, tensorflow: bool = True) -> None:
    """Import torch before TensorFlow when a torch checkpoint is coming: the other order can
    crash the process on some machines (triton after tensorflow)."""
    if str(source).lower().endswith((".pth", ".pt", ".bin")):
        # without torch, reading the file explains which extra to install
        with contextlib.suppress(ImportError):
            import torch  # noqa: F401
    if tensorflow:
        _quiet_tensorflow()


def main() -> None:  # pragma: no cover - console script entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
