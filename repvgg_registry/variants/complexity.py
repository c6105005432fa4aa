"""Parameter and MAC counts computed from a :class:`VariantSpec`, without building a model.

Counts follow PyTorch's convention (what the paper and timm report): trainable parameters only,
so BatchNorm running statistics are not counted. MACs count multiply-accumulates of the
convolutions, the SE layers and the classifier at a given input size.
"""

from __future__ import annotations

from .table import LayerPlan, VariantSpec


def _conv_out(size: int, stride: int) -> int:
    """Output size of a 3x3 convolution with padding 1 (or dilation d and padding d: the same)."""
    return (size + 2 - 3) // stride + 1


def _se_params(plan: LayerPlan) -> int:
    c, r = plan.out_channels, plan.se_channels
    return 0 if r == 0 else (c * r + r) + (r * c + c)


def block_params(plan: LayerPlan, form: str) -> int:
    """Trainable parameters of one block in ``train`` or ``deploy`` form."""
    per_group_in = plan.in_channels // plan.groups
    out = plan.out_channels
    if form == "deploy":
        return 9 * per_group_in * out + out + _se_params(plan)
    branches = (9 * per_group_in * out + 2 * out) + (per_group_in * out + 2 * out)
    identity = 2 * out if plan.has_identity else 0
    return branches + identity + _se_params(plan)


def head_params(spec: VariantSpec, num_classes: int | None = None) -> int:
    classes = spec.num_classes if num_classes is None else num_classes
    return spec.num_features * classes + classes


def count_params(
    spec: VariantSpec, form: str = "deploy", *, include_top: bool = True, num_classes: int | None = None
) -> int:
    """Total trainable parameters of the whole network (with a ``num_classes`` head, default the variant's)."""
    if form not in ("train", "deploy"):
        raise ValueError(f"form must be 'train' or 'deploy', not {form!r}")
    total = sum(block_params(p, form) for p in spec.layers())
    return total + (head_params(spec, num_classes) if include_top else 0)


def layer_macs(spec: VariantSpec, height: int = 224, width: int | None = None, *, output_stride: int = 32) -> list[int]:
    """Multiply-accumulates of each deploy-form block (conv, and SE where present) for one image,
    in ``spec.layers()`` order; benchmarks use it to turn per-conv times into GFLOP/s. Below
    ``output_stride`` 32 the dilated stages run on larger maps and cost more."""
    h, w = height, height if width is None else width
    macs = []
    for plan in spec.layers(output_stride):
        h, w = _conv_out(h, plan.stride), _conv_out(w, plan.stride)
        macs.append(
            h * w * 9 * (plan.in_channels // plan.groups) * plan.out_channels + 2 * plan.out_channels * plan.se_channels
        )
    return macs


def count_macs(
    spec: VariantSpec,
    height: int = 224,
    width: int | None = None,
    *,
    include_top: bool = True,
    num_classes: int | None = None,
    output_stride: int = 32,
) -> int:
    """Multiply-accumulates of the deploy form for one image of ``height`` x ``width`` (with a
    ``num_classes`` head, default the variant's) at ``output_stride``."""
    macs = sum(layer_macs(spec, height, width, output_stride=output_stride))
    if include_top:
        macs += spec.num_features * (spec.num_classes if num_classes is None else num_classes)
    return macs


def summary(spec: VariantSpec) -> dict:
    """The figures ``list`` and ``show`` print, in the JSON shape the CLI documents."""
    return {
        "name": spec.name,
        "blocks": list(spec.blocks),
        "widths": list(spec.widths),
        "groups": spec.groups,
        "se": spec.has_se,
        "params_train": count_params(spec, "train"),
        "params_deploy": count_params(spec, "deploy"),
        "gmacs": round(count_macs(spec, 224) / 1e9, 4),
        "top1": spec.top1_paper,
        "top1_timm": spec.top1_timm,
        "input_size": spec.input_size,
        "crop_pct": spec.crop_pct,
        "timm_name": spec.timm_name,
    }


def stage_summary(spec: VariantSpec) -> list[dict]:
    """One row per stage (the stem is stage 0): blocks, channels, grouping, identities, SE."""
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
    return stages


def details(spec: VariantSpec) -> dict:
    """What ``show`` prints: :func:`summary` plus the stages and the cost at the default size."""
    return {
        **summary(spec),
        "display_name": spec.display_name,
        "num_features": spec.num_features,
        "default_gmacs": round(count_macs(spec, spec.input_size) / 1e9, 4),
        "grouped_layers": [p.index for p in spec.layers() if p.groups > 1],
        "notes": spec.notes,
        "stages": stage_summary(spec),
    }
