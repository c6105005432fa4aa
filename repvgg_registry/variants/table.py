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

from ..errors import UnknownVariantError

#: Layers (global index, stem = 0) that the official code groups in the g2/g4 variants.
#: They are the even-indexed layers 2..26: always stride-1 blocks with in == out.
OFFICIAL_GROUPED_LAYERS: tuple[int, ...] = tuple(range(2, 27, 2))

#: Where the authors published their checkpoints (train-time ``RepVGG-<name>-train.pth``).
OFFICIAL_RELEASE_URL = "https://github.com/DingXiaoH/RepVGG#imagenet-pretrained-models"

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


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

    @property
    def has_identity(self) -> bool:
        """The BN-only identity branch exists only where the shapes allow a skip."""
        return self.in_channels == self.out_channels and self.stride == 1

    @property
    def name(self) -> str:
        """Stable Keras layer name that weight import relies on."""
        return "stem" if self.stage == 0 else f"stage{self.stage}_block{self.block}"


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
    def has_se(self) -> bool:
        return self.se_ratio > 0

    @property
    def hub_name(self) -> str:
        """Lower-case name used in handles and paths, e.g. ``b3g4``."""
        return self.name.lower()

    @property
    def display_name(self) -> str:
        return f"RepVGG-{self.name}"

    def layers(self) -> list[LayerPlan]:
        """The blocks in order: stem, then each stage whose first block has stride 2."""
        widths = self.widths
        plans = [self._plan(0, 0, 0, 3, widths[0], 2)]
        in_ch = widths[0]
        index = 1
        for stage, depth in enumerate(self.blocks, start=1):
            for block in range(depth):
                stride = 2 if block == 0 else 1
                plans.append(self._plan(index, stage, block, in_ch, widths[stage], stride))
                in_ch = widths[stage]
                index += 1
        return plans

    def _plan(self, index: int, stage: int, block: int, cin: int, cout: int, stride: int) -> LayerPlan:
        groups = self.groups if index in self.grouped_layers else 1
        se = int(round(cout * self.se_ratio)) if self.has_se else 0
        return LayerPlan(index, stage, block, cin, cout, stride, groups, se)


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
