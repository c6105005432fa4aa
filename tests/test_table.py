"""The declarative variant table: names, layout, and exact parameter / MAC counts."""

from __future__ import annotations

import pytest

from repvgg_registry.variants import VARIANTS, UnknownVariantError, count_macs, count_params, get_variant

# REFERENCE section 1: train params (M), deploy params (M), deploy GMACs at 224.
PUBLISHED = {
    "A0": (9.11, 8.31, 1.36),
    "A1": (14.09, 12.79, 2.36),
    "A2": (28.21, 25.50, 5.12),
    "B0": (15.82, 14.34, 3.06),
    "B1": (57.42, 51.83, 11.82),
    "B1g2": (45.78, 41.36, 8.81),
    "B1g4": (39.97, 36.13, 7.31),
    "B2": (89.02, 80.32, 18.38),
    "B2g2": (70.85, 63.96, 13.68),
    "B2g4": (61.76, 55.78, 11.33),
    "B3": (123.09, 110.96, 26.21),
    "B3g2": (96.91, 87.40, 19.45),
    "B3g4": (83.83, 75.63, 16.06),
    "D2se": (133.33, 120.39, 32.83),
}


def test_table_has_all_fourteen_variants_in_order():
    assert [v.name for v in VARIANTS] == list(PUBLISHED)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_params_and_macs_match_the_paper(name):
    spec = get_variant(name)
    train_m, deploy_m, gmacs = PUBLISHED[name]
    assert round(count_params(spec, "train") / 1e6, 2) == pytest.approx(train_m, abs=0.0051)
    assert round(count_params(spec, "deploy") / 1e6, 2) == pytest.approx(deploy_m, abs=0.0051)
    assert round(count_macs(spec, 224) / 1e9, 2) == pytest.approx(gmacs, abs=0.0051)


@pytest.mark.parametrize("spelling", ["B3g4", "b3g4", "B3G4", "RepVGG-B3g4", "repvgg_b3g4", " repvgg-b3g4 "])
def test_names_are_accepted_in_every_spelling(spelling):
    assert get_variant(spelling).name == "B3g4"


@pytest.mark.parametrize(
    ("typo", "nearest"), [("B3g5", "B3g4"), ("a00", "A0"), ("D2", "D2se"), ("RepVGG-B2gg4", "B2g4")]
)
def test_unknown_name_suggests_the_nearest(typo, nearest):
    with pytest.raises(UnknownVariantError) as err:
        get_variant(typo)
    assert err.value.suggestion == nearest
    assert str(err.value) == f"unknown variant '{typo}'; did you mean '{nearest}'?"


def test_widths_and_strides_follow_the_paper():
    spec = get_variant("A0")
    assert spec.widths == (48, 48, 96, 192, 1280)
    layers = spec.layers()
    assert len(layers) == 1 + sum(spec.blocks)
    assert [p.index for p in layers if p.stride == 2] == [0, 1, 3, 7, 21]
    assert get_variant("B1").widths == (64, 128, 256, 512, 2048)
    assert get_variant("D2se").num_features == 2560


@pytest.mark.parametrize("name", ["B1g2", "B1g4", "B2g2", "B2g4", "B3g2", "B3g4"])
def test_grouped_layers_are_the_even_layers_2_to_26_and_all_have_identity(name):
    spec = get_variant(name)
    grouped = [p for p in spec.layers() if p.groups > 1]
    assert [p.index for p in grouped] == list(range(2, 27, 2))
    assert {p.groups for p in grouped} == {spec.groups}
    assert all(p.has_identity for p in grouped)


def test_se_only_in_d2se_with_reduction_16():
    for spec in VARIANTS:
        se = {p.se_channels for p in spec.layers()}
        if spec.name == "D2se":
            assert all(p.se_channels == p.out_channels // 16 for p in spec.layers())
        else:
            assert se == {0}


def test_defaults_and_timm_names():
    assert get_variant("D2se").input_size == 320 and get_variant("D2se").crop_pct == 1.0
    assert get_variant("A0").input_size == 224 and get_variant("A0").crop_pct == 0.875
    assert [v.name for v in VARIANTS if v.timm_name is None] == ["B1g2", "B2g2", "B3g2"]
    assert get_variant("B3g4").timm_name == "repvgg_b3g4"
