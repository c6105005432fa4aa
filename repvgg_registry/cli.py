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


HubOption = Annotated[
    str | None,
    typer.Option(
        "--hub",
        help="Hub: a folder (default: $REPVGG_REGISTRY_HUB, else ~/.local/share/repvgg-registry/hub), "
        "or hf://NAMESPACE for the Hugging Face Hub.",
        show_default=False,
    ),
]
NamespaceOption = Annotated[str, typer.Option("--namespace", help="Handle namespace.")]


def _hub(location: str | None, namespace: str = "repvgg", *, private: bool = False):
    from .registry import HubError, open_hub

    try:
        return open_hub(location, namespace=namespace, private=private)
    except HubError as exc:
        fail(str(exc))


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
def list_variants(as_json: JsonOption = False, hub: HubOption = None) -> None:
    """List every RepVGG variant with its shape, size, cost, reference accuracy and published versions."""
    from .registry import HubError

    try:
        published = _hub(hub).published_versions()
    except HubError:
        published = {}
    rows = [{**summary(spec), "published": published.get(spec.hub_name, [])} for spec in VARIANTS]
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
        ("published", "left"),
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
            ",".join(f"v{n}" for n in row["published"]) or "-",
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
    from .hashing import sha256_file
    from .variants.checkpoints import WeightsError, classify, identify_variant, read_state_dict

    try:
        ckpt = classify(read_state_dict(path), path)
    except WeightsError as exc:
        fail(str(exc))
    spec = identify_variant(ckpt)
    head = ckpt.tensors.get("head.fc.weight")
    info = {
        "path": path,
        "sha256": sha256_file(path),
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


@app.command()
def publish(
    variants: Annotated[list[str] | None, typer.Argument(help="Variants to publish, e.g. A0 B3g4.")] = None,
    all_variants: Annotated[bool, typer.Option("--all", help="Publish every variant.")] = False,
    hub: HubOption = None,
    namespace: NamespaceOption = "repvgg",
    weights: WeightsOption = "timm",
    version: Annotated[int | None, typer.Option("--version", min=1, help="Version number (default: next).")] = None,
    private: Annotated[bool, typer.Option("--private", help="Create missing Hugging Face repos as private.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed for --weights random.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Build, check and publish variants as the next immutable version in a hub."""
    import time

    from .registry import HubError

    if all_variants:
        specs = list(VARIANTS)
    elif variants:
        specs = [_variant(name) for name in variants]
    else:
        fail("name at least one variant, or pass --all")
    try:
        target = _hub(hub, namespace, private=private)
        target.check_can_publish()
    except HubError as exc:
        fail(str(exc))
    _torch_before_tensorflow(weights)
    from .publish.build import BuildError
    from .registry.operations import publish_variant
    from .variants.checkpoints import WeightsError

    rows = []
    for spec in specs:
        start = time.perf_counter()
        with RichPhases(spec.display_name) as reporter:
            try:
                published = publish_variant(
                    target, spec.name, weights=weights, version=version, seed=seed, reporter=reporter
                )
            except (WeightsError, BuildError, HubError) as exc:
                reporter.stop()
                err_console.print(f"error: {spec.name}: {exc}", markup=False, highlight=False, soft_wrap=True)
                rows.append({"variant": spec.name, "version": None, "handles": [], "seconds": 0.0, "outcome": str(exc)})
                continue
        rows.append(
            {
                "variant": spec.name,
                "version": published[0].handle.version,
                "handles": [str(v.handle) for v in published],
                "seconds": round(time.perf_counter() - start, 2),
                "outcome": "published",
            }
        )
    if as_json:
        _print_json(rows)
    else:
        where = getattr(target, "location", None) or getattr(target, "root", "")
        table = Table(title=f"published to {where}", header_style="bold")
        for column in ("variant", "version", "handles", "time", "outcome"):
            table.add_column(column)
        for row in rows:
            table.add_row(
                row["variant"],
                str(row["version"] or "-"),
                "\n".join(row["handles"]) or "-",
                f"{row['seconds']:.1f}s",
                "[green]published[/green]" if row["outcome"] == "published" else f"[red]failed[/red]: {row['outcome']}",
            )
        console.print(table)
    if any(row["outcome"] != "published" for row in rows):
        raise typer.Exit(1)


@app.command()
def versions(
    variant: Annotated[str, typer.Argument(help="Variant name, e.g. A0.")],
    hub: HubOption = None,
    namespace: NamespaceOption = "repvgg",
    as_json: JsonOption = False,
) -> None:
    """List the published versions of a variant, per task."""
    from .registry import HubError

    spec = _variant(variant)
    try:
        found = _hub(hub, namespace).versions(spec.hub_name)
    except HubError as exc:
        fail(str(exc))
    if as_json:
        _print_json([v.to_dict() for v in found])
        return
    table = Table(title=f"{spec.display_name} versions", header_style="bold")
    for column in ("handle", "task", "version", "created", "weights", "sha256"):
        table.add_column(column)
    for v in found:
        table.add_row(str(v.handle), v.handle.task, str(v.handle.version), v.created, v.weights_source, v.sha256[:16])
    console.print(table if found else f"{spec.display_name}: nothing published yet")


@app.command()
def verify(
    target: Annotated[str, typer.Argument(help="A handle (repvgg/a0/feature_vector/1) or a published folder.")],
    hub: HubOption = None,
    namespace: NamespaceOption = "repvgg",
    as_json: JsonOption = False,
) -> None:
    """Recompute every checksum of a published version, load it and check its signature."""
    from .registry import HubError

    _quiet_tensorflow()
    from .registry.operations import verify as run_verify

    try:
        report = run_verify(_hub(hub, namespace), target)
    except HubError as exc:
        fail(str(exc))
    if as_json:
        _print_json(report.to_dict())
    elif report.ok:
        console.print(f"[green]OK[/green] {target}: {report.checked_files} files match, {report.signature}")
    if not report.ok:
        if not as_json:
            fail(
                f"{target}: {report.problems[0]}"
                + (f" (+{len(report.problems) - 1} more)" if len(report.problems) > 1 else ""),
                1,
            )
        raise typer.Exit(1)


@app.command()
def serve(
    hub: HubOption = None,
    namespace: NamespaceOption = "repvgg",
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to bind.")] = 8000,
) -> None:
    """Serve the hub over HTTP so that hub.KerasLayer("http://HOST:PORT/<handle>") works."""
    from .registry.local import LocalHub
    from .registry.server import make_server

    target = _hub(hub, namespace)
    if not isinstance(target, LocalHub):
        fail("serve works on a local hub folder; pass --hub PATH")
    target.root.mkdir(parents=True, exist_ok=True)
    try:
        server = make_server(target, host, port)
    except OSError as exc:
        fail(f"cannot bind {host}:{port}: {exc.strerror}; pick another --port")
    bound_host, bound_port = server.server_address[:2]
    err_console.print(f"serving {target.root} on http://{bound_host}:{bound_port}/ (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


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
