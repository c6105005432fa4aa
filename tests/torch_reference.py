"""PyTorch references for the weight-import tests: timm models with random weights AND randomised
BatchNorm statistics, saved in timm naming and in the authors' naming.

The official naming is produced here by an independent rename (not the package's own mapping), so
that a wrong mapping in the package cannot be mirrored by the test.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import timm
import torch
from safetensors.torch import save_file
from timm.models.byobnet import ByobNet, ByoModelCfg, _rep_vgg_bcfg
from timm.utils.model import reparameterize_model

from repvgg_registry.variants import VariantSpec

torch.set_num_threads(2)

#: BN gamma ranges. With every gamma around 1 a random 3-branch block amplifies any difference
#: ~1.3x, so float32 rounding grows past 1e-4 over D2se's 48 blocks (seen: 12% at the logits).
#: Like a trained residual network, the identity branch dominates and the conv branches add a
#: smaller term, which keeps each block's gain near 1 while images still differ at the output.
GAMMA = (0.05, 0.2)
GAMMA_IDENTITY = (0.8, 1.2)


def timm_model(
    spec: VariantSpec,
    calibration: list[np.ndarray],
    seed: int = 0,
    perturb: float = 1.0,
    num_classes: int = 1000,
    output_stride: int = 32,
    variance_floor: float = 0.05,
) -> torch.nn.Module:
    """timm's model of ``spec`` (a ByobNet config with groups 2 for the g2 variants timm lacks),
    with random weights and randomised BN statistics, in eval mode.

    Purely random running statistics make a deep random network chaotic (dead ReLU channels
    normalised by a near-zero variance amplify float32 noise block after block until logits reach
    1e10), so the statistics are set layer after layer in forward order from the NHWC batches the
    test will feed (averaged over them), each variance floored at 5% of the layer's mean
    variance, then perturbed before the next layer sees them: mean shifted by up to
    ``0.1 * perturb`` standard deviations, variance scaled by ``1 +- 0.2 * perturb``. At
    ``output_stride`` 16 or 8 the statistics are those of the dilated network (its weights are
    the same and fit any output stride).
    """
    torch.manual_seed(seed)
    if spec.timm_name:
        model = timm.create_model(
            spec.timm_name, pretrained=False, num_classes=num_classes, output_stride=output_stride
        )
    else:
        a, b = spec.width_multipliers
        cfg = ByoModelCfg(
            blocks=_rep_vgg_bcfg(d=spec.blocks, wf=(a, a, a, b), groups=spec.groups),
            stem_type="rep",
            stem_chs=min(64, int(64 * a)),
        )
        model = ByobNet(cfg, num_classes=num_classes)
    gen = torch.Generator().manual_seed(seed)
    named = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    norms = [m for _, m in named]
    state = {"pass": 0, "last": len(calibration) - 1}

    def calibrate(bn, args):
        x, k = args[0], state["pass"]
        mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
        bn.running_mean.mul_(k / (k + 1)).add_(mean / (k + 1))
        bn.running_var.mul_(k / (k + 1)).add_(var / (k + 1))
        if k == state["last"]:
            var = torch.clamp(bn.running_var, min=variance_floor * float(bn.running_var.mean()) + 1e-6)
            shift = (torch.rand(var.shape, generator=gen) * 2 - 1) * 0.1 * perturb * torch.sqrt(var)
            bn.running_mean.add_(shift)
            bn.running_var.copy_(var * (1 + perturb * 0.2 * (torch.rand(var.shape, generator=gen) * 2 - 1)))

    with torch.no_grad():
        for name, bn in named:
            bn.weight.uniform_(*(GAMMA_IDENTITY if name.endswith("identity") else GAMMA), generator=gen)
            bn.bias.normal_(0.0, 0.2, generator=gen)
        fc = model.get_classifier()
        fc.weight.normal_(0.0, 0.05, generator=gen)
        fc.bias.normal_(0.0, 0.1, generator=gen)
        model.eval()
        hooks = [bn.register_forward_pre_hook(calibrate) for bn in norms]
        for images in calibration:
            model(_nchw(images))
            state["pass"] += 1
        for hook in hooks:
            hook.remove()
    return model.eval()


def _nchw(images_nhwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images_nhwc).permute(0, 3, 1, 2).contiguous()


def fused(model: torch.nn.Module) -> torch.nn.Module:
    """timm's own re-parameterization: the reference for the deploy form."""
    return reparameterize_model(model).eval()


def logits(model: torch.nn.Module, images_nhwc: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(_nchw(images_nhwc)).numpy()


_TIMM_TO_OFFICIAL = (
    (r"^stem\.", "stage0."),
    (r"^head\.fc\.", "linear."),
    (r"\.conv_kxk\.", ".rbr_dense."),
    (r"\.conv_1x1\.", ".rbr_1x1."),
    (r"\.identity\.", ".rbr_identity."),
    (r"\.reparam_conv\.", ".rbr_reparam."),
    (r"\.attn\.fc1\.", ".se.down."),
    (r"\.attn\.fc2\.", ".se.up."),
)


def official_key(key: str) -> str:
    key = re.sub(r"^stages\.(\d)\.(\d+)\.", lambda m: f"stage{int(m.group(1)) + 1}.{m.group(2)}.", key)
    for pattern, replacement in _TIMM_TO_OFFICIAL:
        key = re.sub(pattern, replacement, key)
    return key


def save_timm_safetensors(model: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def save_official_pth(model: torch.nn.Module, path: Path, *, wrap: bool = True, prefix: str = "module.") -> Path:
    """The authors' naming, wrapped in ``state_dict`` with a ``module.`` prefix (as DDP saves)
    and without ``num_batches_tracked`` (as older PyTorch saved)."""
    state = {
        prefix + official_key(k): v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")
    }
    torch.save({"state_dict": state} if wrap else state, str(path))
    return path


def timm_features(spec: VariantSpec, model: torch.nn.Module, output_stride: int = 32) -> torch.nn.Module:
    """timm's ``features_only=True`` model of ``spec`` at ``output_stride``, holding ``model``'s
    weights (a timm model from :func:`timm_model`, at any output stride: dilation adds no weight).

    timm's ``FeatureListNet`` flattens the first module level, so ``stages.0.1.x`` is
    ``stages_0.1.x`` there; the classifier is not part of it."""
    features = timm.create_model(spec.timm_name, pretrained=False, features_only=True, output_stride=output_stride)
    state = {
        re.sub(r"^stages\.(\d)\.", r"stages_\1.", key): value
        for key, value in model.state_dict().items()
        if not key.startswith("head.")
    }
    features.load_state_dict(state, strict=True)
    return features.eval()


def feature_maps(model: torch.nn.Module, images_nhwc: np.ndarray) -> list[np.ndarray]:
    """A features_only model's maps on NHWC images (in the model's dtype), each back in NHWC."""
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        return [m.permute(0, 2, 3, 1).numpy() for m in model(_nchw(images_nhwc).to(dtype))]
