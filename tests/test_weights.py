"""Weight import proven against timm's PyTorch models.

timm models get random weights and randomised BN statistics, are saved in timm naming
(.safetensors) and in the authors' naming (.pth, renamed independently in torch_reference), in train
form and after ``timm.utils.reparameterize_model``; each file is loaded into our Keras models and
the logits are compared on the same images (NHWC for us, NCHW for timm).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch_reference as ref

from repvgg_registry.variants import VARIANTS, build_model, fuse, get_variant
from repvgg_registry.variants.equivalence import compare_outputs, sample_images
from repvgg_registry.variants.weights import load_weights

# Full matrix at 224 (D2se also at its 320 default, B1g4 also non-square); the rest at a small size.
FULL = [("A0", 224, 224), ("B1g4", 224, 224), ("B1g4", 64, 96), ("D2se", 224, 224), ("D2se", 320, 320)]
SMALL_SIZE = 96
# A random D2se (48 blocks with SE) is chaotic: any shift of its calibrated running statistics
# blows the logits up to 1e5..1e9, where float32 noise dominates. It keeps the statistics
# calibrated on the test batch (still per-channel, far from 0/1) with random gamma and beta.
PERTURB = {"D2se": 0.0}


def _assert_close(ours, theirs, label):
    diff, max_ref, tol = compare_outputs(theirs, np.asarray(ours))
    assert diff <= tol, f"{label}: max abs diff {diff:.3e} > {tol:.3e} (max |logit| {max_ref:.3e})"
    assert np.abs(theirs[0] - theirs[-1]).max() > 100 * tol, f"{label}: degenerate reference"


@pytest.mark.parametrize(("name", "height", "width"), FULL)
def test_full_matrix_against_timm(name, height, width, tmp_path):
    """Both schemes x both forms, loaded into the train and the deploy model."""
    spec = get_variant(name)
    x = sample_images(2, height, width, seed=height + width)
    torch_train = ref.timm_model(spec, [x], seed=3, perturb=PERTURB.get(name, 1.0))
    tag = f"{name}-{height}x{width}"
    train_st = ref.save_timm_safetensors(torch_train, tmp_path / f"{tag}-train.safetensors")
    train_pth = ref.save_official_pth(torch_train, tmp_path / f"RepVGG-{tag}-train.pth")
    expected_train = ref.logits(torch_train, x)
    torch_deploy = ref.fused(torch_train)
    deploy_st = ref.save_timm_safetensors(torch_deploy, tmp_path / f"{tag}-deploy.safetensors")
    deploy_pth = ref.save_official_pth(torch_deploy, tmp_path / f"RepVGG-{tag}-deploy.pth", wrap=False, prefix="")
    expected_deploy = ref.logits(torch_deploy, x)
    del torch_train, torch_deploy

    ours_train = build_model(spec, "train", weights=str(train_st))
    _assert_close(ours_train(x, training=False), expected_train, f"{tag} timm train->train")
    _assert_close(fuse(ours_train)(x), expected_deploy, f"{tag} fuse(ours) vs timm reparameterize_model")
    del ours_train

    loaded = {}
    for label, path in (("official train", train_pth), ("timm deploy", deploy_st), ("official deploy", deploy_pth)):
        model = build_model(spec, "deploy")
        loaded[label] = load_weights(model, path)
        expected = expected_train if "train" in label else expected_deploy
        _assert_close(model(x), expected, f"{tag} {label}->deploy")
    assert loaded["official train"].scheme == "official" and loaded["official train"].form == "train"
    assert loaded["timm deploy"].scheme == "timm" and loaded["timm deploy"].form == "deploy"
    assert loaded["official deploy"].scheme == "official" and loaded["official deploy"].form == "deploy"


@pytest.mark.parametrize("name", [v.name for v in VARIANTS if v.name not in {f[0] for f in FULL}])
def test_every_other_variant_against_timm(name, tmp_path):
    """timm naming into the train form, the authors' deploy naming into the deploy form. The g2
    variants, which timm does not ship, go through a timm ByobNet config with groups=2."""
    spec = get_variant(name)
    x = sample_images(2, SMALL_SIZE, SMALL_SIZE, seed=7)
    torch_train = ref.timm_model(spec, [x], seed=4)
    train_st = ref.save_timm_safetensors(torch_train, tmp_path / f"{name}.safetensors")
    expected_train = ref.logits(torch_train, x)
    torch_deploy = ref.fused(torch_train)
    deploy_pth = ref.save_official_pth(torch_deploy, tmp_path / f"RepVGG-{name}-deploy.pth")
    expected_deploy = ref.logits(torch_deploy, x)
    del torch_train, torch_deploy

    ours = build_model(spec, "train", weights=str(train_st))
    _assert_close(ours(x, training=False), expected_train, f"{name} train")
    del ours
    deploy = build_model(spec, "deploy", weights=str(deploy_pth))
    _assert_close(deploy(x), expected_deploy, f"{name} deploy")


def test_headless_model_takes_a_checkpoint_with_a_head(tmp_path):
    spec = get_variant("A0")
    x = sample_images(2, 64, 64)
    torch_model = ref.timm_model(spec, [x], seed=5)
    path = ref.save_timm_safetensors(torch_model, tmp_path / "a0-head.safetensors")
    features = build_model(spec, "deploy", include_top=False, weights=str(path))
    import torch

    with torch.no_grad():
        expected = torch_model.forward_head(
            torch_model.forward_features(torch.from_numpy(x).permute(0, 3, 1, 2)), pre_logits=True
        ).numpy()
    _assert_close(features(x), expected, "A0 pooled features")
