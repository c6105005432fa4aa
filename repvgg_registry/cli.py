"""The ``repvgg-registry`` command line: parses arguments and calls the library, nothing more.

TensorFlow is imported inside the commands that need it, so ``--help`` and ``list`` start fast.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from .progress import RichPhases
from .variants.complexity import count_macs, summary
from .variants.table import VARIANTS, UnknownVariantError, VariantSpec, get_variant

app = typer.Typer(
    name="repvgg-registry",
    help="RepVGG networks for TensorFlow: build, fuse, check and publish them as TF Hub models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output keeps whole rows instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 400)

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]
WeightsOption = Annotated[
    str,
    typer.Option("--weights", "-w", help="'random', 'timm', or a checkpoint path (.safetensors, .pth, .pt, .bin)."),
]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line to stderr and exit non-zero."""
    err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _variant(name: str) -> VariantSpec:
    try:
        return get_variant(name)
    except UnknownVariantError as exc:
        fail(str(exc))


def _parse_size(size: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX*,]\s*(\d+))?\s*", size)
    if not match:
        fail(f"invalid --size '{size}'; use N or HxW, for example 224 or 64x96")
    height = int(match.group(1))
    width = int(match.group(2) or height)
    if height < 1 or width < 1:
        fail(f"invalid --size '{size}'; height and width must be positive")
    return height, width


def _print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def _top1(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


@app.command("list")
def list_variants(as_json: JsonOption = False) -> None:
    """List every RepVGG variant with its shape, size, cost and reference accuracy."""
    rows = [summary(spec) for spec in VARIANTS]
    if as_json:
        _print_json(rows)
        return
    table = Table(title="RepVGG variants", header_style="bold")
    for column, justify in [
        ("variant", "left"),
        ("blocks", "left"),
        ("widths", "left"),
        ("groups", "right"),
        ("SE", "center"),
        ("params train", "right"),
        ("params deploy", "right"),
        ("GMACs@224", "right"),
        ("top-1", "right"),
        ("size", "right"),
    ]:
        table.add_column(column, justify=justify)
    for row in rows:
        table.add_row(
            row["name"],
            ",".join(map(str, row["blocks"])),
            ",".join(map(str, row["widths"])),
            str(row["groups"]),
            "yes" if row["se"] else "-",
            _millions(row["params_train"]),
            _millions(row["params_deploy"]),
            f"{row['gmacs']:.2f}",
            _top1(row["top1"]),
            str(row["input_size"]),
        )
    console.print(table)


@app.command()
def show(variant: Annotated[str, typer.Argument(help="Variant name, e.g. B3g4.")], as_json: JsonOption = False) -> None:
    """Show one variant stage by stage."""
    spec = _variant(variant)
    info = summary(spec)
    layers = spec.layers()
    stages = []
    for stage in range(5):
        members = [p for p in layers if p.stage == stage]
        stages.append(
            {
                "stage": stage,
                "name": "stem" if stage == 0 else f"stage{stage}",
                "blocks": len(members),
                "in_channels": members[0].in_channels,
                "out_channels": members[0].out_channels,
                "stride": 2,
                "grouped_blocks": [p.block for p in members if p.groups > 1],
                "groups": max(p.groups for p in members),
                "identity_blocks": sum(p.has_identity for p in members),
                "se_channels": members[0].se_channels,
            }
        )
    info.update(
        display_name=spec.display_name,
        num_features=spec.num_features,
        default_gmacs=round(count_macs(spec, spec.input_size) / 1e9, 4),
        grouped_layers=[p.index for p in layers if p.groups > 1],
        notes=spec.notes,
        stages=stages,
    )
    if as_json:
        _print_json(info)
        return
    console.print(f"[bold]{spec.display_name}[/bold]  {spec.notes}")
    console.print(
        f"params train {_millions(info['params_train'])}, deploy {_millions(info['params_deploy'])}; "
        f"{info['gmacs']:.2f} GMACs at 224, {info['default_gmacs']:.2f} at {spec.input_size}; "
        f"top-1 paper {_top1(spec.top1_paper)} / timm {_top1(spec.top1_timm)}; "
        f"eval {spec.input_size}px crop {spec.crop_pct}; timm name {spec.timm_name or '-'}"
    )
    table = Table(header_style="bold")
    for column in ("stage", "blocks", "in", "out", "stride", "groups", "grouped blocks", "identity", "SE"):
        table.add_column(column, justify="right")
    for s in stages:
        table.add_row(
            s["name"],
            str(s["blocks"]),
            str(s["in_channels"]),
            str(s["out_channels"]),
            "2 (first)",
            str(s["groups"]),
            ",".join(map(str, s["grouped_blocks"])) or "-",
            str(s["identity_blocks"]),
            str(s["se_channels"] or "-"),
        )
    console.print(table)


@app.command("check-fusion")
def check_fusion(
    variant: Annotated[str, typer.Argument(help="Variant name, e.g. D2se.")],
    size: Annotated[str, typer.Option("--size", help="Input size, N or HxW.")] = "64",
    batch: Annotated[int, typer.Option("--batch", min=1, help="Images per batch.")] = 2,
    weights: WeightsOption = "random",
    seed: Annotated[int, typer.Option("--seed", help="Seed for weights, BN statistics and images.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Fuse the train form into the deploy form and prove both give the same logits."""
    spec = _variant(variant)
    height, width = _parse_size(size)
    _torch_before_tensorflow(weights)
    from .variants.equivalence import check_fusion as run_check
    from .variants.weights import WeightsError

    with console.status(f"building {spec.display_name}, fusing and comparing at {height}x{width}"):
        try:
            result = run_check(spec, height, width, batch=batch, weights=weights, seed=seed)
        except WeightsError as exc:
            fail(str(exc))
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
    path: Annotated[str, typer.Argument(help="Checkpoint file: .safetensors, .pth, .pt or .bin.")],
    as_json: JsonOption = False,
) -> None:
    """Say what a checkpoint holds: key scheme, form, the variant it fits, tensor count."""
    _torch_before_tensorflow(path)
    from .variants.checkpoints import WeightsError, classify, identify_variant, read_state_dict, sha256_of

    try:
        ckpt = classify(read_state_dict(path), path)
    except WeightsError as exc:
        fail(str(exc))
    spec = identify_variant(ckpt)
    head = ckpt.tensors.get("head.fc.weight")
    info = {
        "path": path,
        "sha256": sha256_of(path),
        "scheme": ckpt.scheme,
        "form": ckpt.form,
        "variant": spec.name if spec else None,
        "tensors": len(ckpt.tensors),
        "parameters": int(sum(t.size for k, t in ckpt.tensors.items() if "running_" not in k)),
        "num_classes": int(head.shape[0]) if head is not None else None,
    }
    if as_json:
        _print_json(info)
    else:
        table = Table(show_header=False, title=f"checkpoint {path}")
        for key, value in info.items():
            table.add_row(key, "-" if value is None else str(value))
        console.print(table)
    if spec is None:
        fail(f"{path} is a RepVGG {ckpt.form}-form checkpoint ({ckpt.scheme} keys) that fits no known variant")


@app.command()
def build(
    variant: Annotated[str, typer.Argument(help="Variant name, e.g. B3g4.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to create (feature_vector/, classification/).")],
    weights: WeightsOption = "timm",
    seed: Annotated[int, typer.Option("--seed", help="Seed for --weights random.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out folder.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Build the fused TF Hub SavedModels (feature vector and classifier) of a variant."""
    spec = _variant(variant)
    _torch_before_tensorflow(weights)
    from .publish.build import BuildError, build_artifacts
    from .variants.checkpoints import WeightsError

    with RichPhases(f"{spec.display_name}") as reporter:
        try:
            result = build_artifacts(spec, out, weights=weights, seed=seed, overwrite=overwrite, reporter=reporter)
        except (WeightsError, BuildError) as exc:
            reporter.stop()
            fail(str(exc))
    summary_rows = {
        "variant": result.variant,
        "out": str(result.out_dir),
        "artifacts": {task: str(path) for task, path in result.artifacts.items()},
        "max_abs_diff": result.max_abs_diff,
        "weights": result.metadata["classification"]["weights"],
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
    }
    if as_json:
        _print_json(summary_rows)
        return
    table = Table(title=f"built {spec.display_name}", header_style="bold")
    for column in ("task", "path", "params", "output"):
        table.add_column(column)
    for task, path in result.artifacts.items():
        meta = result.metadata[task]
        output = meta["output"]
        width = output.get("num_classes", output.get("num_features"))
        table.add_row(task, str(path), f"{meta['params']:,}", f"{output['name']} [batch, {width}]")
    console.print(table)
    console.print(
        f"check: max abs diff vs the train form {result.max_abs_diff:.2e}; "
        + ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
    )


def _quiet_tensorflow() -> None:
    """Import TensorFlow with native stderr muted: TF 2.21 logs oneDNN and CUDA probes through
    absl before any log level applies, which would bury our one-line errors."""
    if "tensorflow" in sys.modules:
        return
    import os

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


def _torch_before_tensorflow(source: str) -> None:
    """Import torch before TensorFlow when a torch checkpoint is coming: the other order can
    crash the process on some machines (triton after tensorflow)."""
    if source.lower().endswith((".pth", ".pt", ".bin")):
        # without torch, reading the file explains which extra to install
        with contextlib.suppress(ImportError):
            import torch  # noqa: F401
    _quiet_tensorflow()


def main() -> None:  # pragma: no cover - console script entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
