"""The declarative table of RepVGG variants.

Every variant is one :class:`VariantSpec` row in :data:`VARIANTS`; the builder, the complexity
counter, the weight importer and the CLI all read the same rows, so adding a variant is adding a
row. This module is pure Python on purpose: ``repvgg-registry list`` reads it without importing
TensorFlow.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from ..errors import UnknownVariantError, UsageError

#: Layers (global index, stem = 0) that the official code groups in the g2/g4 variants.
#: They are the even-indexed layers 2..26: always stride-1 blocks with in == out.
OFFICIAL_GROUPED_LAYERS: tuple[int, ...] = tuple(range(2, 27, 2))

#: Where the authors published their checkpoints (train-time ``RepVGG-<name>-train.pth``).
OFFICIAL_RELEASE_URL = "https://github.com/DingXiaoH/RepVGG#imagenet-pretrained-models"

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: The network's output strides: 32 is the plain network; 16 runs the last stage at stride 1, 8 the
#: last two, dilated as timm's ``output_stride`` does (see :meth:`VariantSpec.layers`).
OUTPUT_STRIDES: tuple[int, ...] = (32, 16, 8)
#: The nominal strides of the five feature maps: the stem and the four stages.
FEATURE_STRIDES: tuple[int, ...] = (2, 4, 8, 16, 32)


def feature_key(stride: int) -> str:
    """``stride_8``: the key of a feature map, named by its nominal stride (at any output stride)."""
    return f"stride_{stride}"


FEATURE_KEYS: tuple[str, ...] = tuple(feature_key(s) for s in FEATURE_STRIDES)


def check_output_stride(output_stride: int, option: str = "output_stride") -> int:
    """``output_stride`` if it is one of :data:`OUTPUT_STRIDES`, else a UsageError naming them
    (``option``: how the caller spells it, ``--output-stride`` on the command line)."""
    if isinstance(output_stride, bool) or output_stride not in OUTPUT_STRIDES:
        raise UsageError(option, output_stride, "use 32, 16 or 8 (16 and 8 dilate the last stages, as timm does)")
    return int(output_stride)


def check_feature_keys(keys) -> tuple[str, ...]:
    """The feature-map keys asked for, in network order; a ValueError naming the valid keys for
    anything else (``True`` asks for all five)."""
    if keys is True:
        return FEATURE_KEYS
    asked = [keys] if isinstance(keys, str) else list(keys)
    unknown = [k for k in asked if k not in FEATURE_KEYS]
    if unknown or not asked:
        found = f"no such feature map {unknown[0]!r}" if unknown else "no feature map asked for"
        raise UsageError(
            "feature_maps", keys, f"{found}; the valid keys are {', '.join(FEATURE_KEYS)} (or True for all)"
        )
    return tuple(k for k in FEATURE_KEYS if k in asked)


@dataclass(frozen=True)
class LayerPlan:
    """One RepVGG block as the builder lays it out (the stem is layer 0)."""

    index: int  # global index, stem = 0, continuing across stages
    stage: int  # 0 = stem, 1..4 = stages
    block: int  # index inside the stage
    in_channels: int
    out_channels: int
    stride: int
    groups: int
    se_channels: int  # 0 = no squeeze-excitation
    dilation: int = 1  # of the 3x3 conv (padding = dilation on every side); > 1 only below output stride 32

    @property
    def has_identity(self) -> bool:
        """The BN-only identity branch exists only where the shapes allow a skip."""
        return self.in_channels == self.out_channels and self.stride == 1

    @property
    def name(self) -> str:
        """Stable Keras layer name that weight import relies on."""
        return "stem" if self.stage == 0 else f"stage{self.stage}_block{self.block}"


@dataclass(frozen=True)
class FeatureLevel:
    """One feature map: its key (``stride_8``), the block whose output it is, its real stride
    (``stride_8`` is at stride 8 at every output stride; ``stride_32`` at 16 or 8 below 32), its
    channels, and that block's index (the network up to it computes the map)."""

    key: str
    block: str
    stride: int
    channels: int
    index: int

    def to_dict(self) -> dict:
        return {"key": self.key, "stride": self.stride, "channels": self.channels}


@dataclass(frozen=True)
class VariantSpec:
    """One row of the table: everything that defines a RepVGG variant, as data."""

    name: str
    blocks: tuple[int, int, int, int]
    width_multipliers: tuple[float, float]  # (a, b) of the paper
    groups: int = 1
    grouped_layers: tuple[int, ...] = OFFICIAL_GROUPED_LAYERS
    se_ratio: float = 0.0  # SE reduction, 1/16 for D2se; SE sits after the sum, before ReLU
    input_size: int = 224
    crop_pct: float = 0.875
    top1_paper: float | None = None
    top1_timm: float | None = None
    timm_name: str | None = None
    num_classes: int = 1000
    notes: str = ""
    aliases: tuple[str, ...] = field(default=())

    @property
    def widths(self) -> tuple[int, int, int, int, int]:
        """Channel widths of the stem and the four stages."""
        a, b = self.width_multipliers
        return (
            min(64, int(64 * a)),
            int(64 * a),
            int(128 * a),
            int(256 * a),
            int(512 * b),
        )

    @property
    def num_features(self) -> int:
        """Width of the pooled feature vector (the last stage's width)."""
        return self.widths[-1]

    @property
    def resize_to(self) -> int:
        """The short side an image is resized to before the centre crop to ``input_size``."""
        return int(round(self.input_size / self.crop_pct))

    @property
    def has_se(self) -> bool:
        return self.se_ratio > 0

    @property
    def hub_name(self) -> str:
        """Lower-case name used in handles and paths, e.g. ``b3g4``."""
        return self.name.lower()

    @property
    def display_name(self) -> str:
        return f"RepVGG-{self.name}"

    def layers(self, output_stride: int = 32, *, feature_maps: tuple[str, ...] = ()) -> list[LayerPlan]:
        """The blocks in order: stem, then each stage whose first block has stride 2; with
        ``feature_maps`` (keys of :meth:`feature_levels`) only up to the deepest of those maps.

        Below ``output_stride`` 32 the stages that would pass it run at stride 1, dilated by timm's
        rule (``byobnet.create_byob_stages``): such a stage multiplies the dilation by the stride it
        gives up; its first block keeps the previous dilation (1 while the dilation is at most 2,
        else 2), the following blocks take the new one. At 16 that leaves stage 4 (one block)
        undilated at stride 1; at 8 stage 3 runs with dilations 1, 2, 2, ... and stage 4 with 2.
        """
        check_output_stride(output_stride)
        widths = self.widths
        plans = [self._plan(0, 0, 0, 3, widths[0], 2, 1)]
        in_ch = widths[0]
        index, net_stride, dilation = 1, 2, 1
        for stage, depth in enumerate(self.blocks, start=1):
            stride = 2
            if net_stride >= output_stride:
                dilation, stride = dilation * stride, 1
            net_stride *= stride
            block_dilation = 1 if dilation in (1, 2) else 2
            for block in range(depth):
                plans.append(
                    self._plan(index, stage, block, in_ch, widths[stage], stride if block == 0 else 1, block_dilation)
                )
                in_ch, block_dilation = widths[stage], dilation
                index += 1
        if feature_maps:
            deepest = max(level.index for level in self._levels(plans) if level.key in feature_maps)
            plans = plans[: deepest + 1]
        return plans

    def _plan(self, index: int, stage: int, block: int, cin: int, cout: int, stride: int, dilation: int) -> LayerPlan:
        groups = self.groups if index in self.grouped_layers else 1
        se = int(round(cout * self.se_ratio)) if self.has_se else 0
        return LayerPlan(index, stage, block, cin, cout, stride, groups, se, dilation)

    def feature_levels(self, output_stride: int = 32) -> list[FeatureLevel]:
        """The five feature maps at ``output_stride``: the output of the stem and of each stage's
        last block, keyed by nominal stride, with the stride they really have."""
        return self._levels(self.layers(output_stride))

    def _levels(self, plans: list[LayerPlan]) -> list[FeatureLevel]:
        first: dict[int, LayerPlan] = {}
        last: dict[int, LayerPlan] = {}
        for plan in plans:
            first.setdefault(plan.stage, plan)
            last[plan.stage] = plan
        levels, stride = [], 1
        for stage, nominal in enumerate(FEATURE_STRIDES):
            stride *= first[stage].stride
            end = last[stage]
            levels.append(FeatureLevel(feature_key(nominal), end.name, stride, self.widths[stage], end.index))
        return levels


_B_BLOCKS = (4, 6, 16, 1)
_A_BLOCKS = (2, 4, 14, 1)

#: The table. Paper numbers from arXiv 2101.03697, timm numbers from timm's results tables.
VARIANTS: tuple[VariantSpec, ...] = (
    VariantSpec("A0", _A_BLOCKS, (0.75, 2.5), top1_paper=72.41, top1_timm=72.426, timm_name="repvgg_a0"),
    VariantSpec("A1", _A_BLOCKS, (1.0, 2.5), top1_paper=74.46, top1_timm=74.474, timm_name="repvgg_a1"),
    VariantSpec("A2", _A_BLOCKS, (1.5, 2.75), top1_paper=76.48, top1_timm=76.488, timm_name="repvgg_a2"),
    VariantSpec("B0", _B_BLOCKS, (1.0, 2.5), top1_paper=75.14, top1_timm=75.158, timm_name="repvgg_b0"),
    VariantSpec("B1", _B_BLOCKS, (2.0, 4.0), top1_paper=78.37, top1_timm=78.370, timm_name="repvgg_b1"),
    VariantSpec("B1g2", _B_BLOCKS, (2.0, 4.0), groups=2, top1_paper=77.78),
    VariantSpec("B1g4", _B_BLOCKS, (2.0, 4.0), groups=4, top1_paper=77.58, top1_timm=77.608, timm_name="repvgg_b1g4"),
    VariantSpec("B2", _B_BLOCKS, (2.5, 5.0), top1_paper=78.78, top1_timm=78.788, timm_name="repvgg_b2"),
    VariantSpec("B2g2", _B_BLOCKS, (2.5, 5.0), groups=2, notes="accuracy not reported"),
    VariantSpec(
        "B2g4",
        _B_BLOCKS,
        (2.5, 5.0),
        groups=4,
        top1_paper=79.38,
        top1_timm=79.396,
        timm_name="repvgg_b2g4",
        notes="paper accuracy after 200 epochs",
    ),
    VariantSpec("B3", _B_BLOCKS, (3.0, 5.0), top1_paper=80.52, top1_timm=80.528, timm_name="repvgg_b3"),
    VariantSpec("B3g2", _B_BLOCKS, (3.0, 5.0), groups=2, notes="accuracy not reported"),
    VariantSpec("B3g4", _B_BLOCKS, (3.0, 5.0), groups=4, top1_paper=80.21, top1_timm=80.224, timm_name="repvgg_b3g4"),
    VariantSpec(
        "D2se",
        (8, 14, 24, 1),
        (2.5, 5.0),
        se_ratio=1 / 16,
        input_size=320,
        crop_pct=1.0,
        top1_paper=83.55,
        top1_timm=83.550,
        timm_name="repvgg_d2se",
        notes="paper accuracy at 320x320",
    ),
)


def _normalise(name: str) -> str:
    """Fold the spellings users type (``RepVGG-B3g4``, ``repvgg_b3g4``) to ``b3g4``."""
    key = name.strip().lower()
    key = re.sub(r"^repvgg[-_ ]?", "", key)
    return key.replace("-", "").replace("_", "")


_BY_KEY: dict[str, VariantSpec] = {_normalise(v.name): v for v in VARIANTS}


def variant_names() -> list[str]:
    return [v.name for v in VARIANTS]


def suggest_variant(name: str) -> str | None:
    """Closest known variant name, or None when nothing is close."""
    key = _normalise(name)
    matches = difflib.get_close_matches(key, list(_BY_KEY), n=1, cutoff=0.5)
    return _BY_KEY[matches[0]].name if matches else None


def get_variant(name: str | VariantSpec) -> VariantSpec:
    """Look a variant up by any accepted spelling, case-insensitively."""
    if isinstance(name, VariantSpec):
        return name
    spec = _BY_KEY.get(_normalise(name))
    if spec is None:
        raise UnknownVariantError(name, suggest_variant(name))
    return spec
