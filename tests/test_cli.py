"""The CLI contract of `list`, `show` and `check-fusion`, and its fast start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from repvgg_registry.cli import app

runner = CliRunner()
JSON_KEYS = {"name", "blocks", "widths", "groups", "se", "params_train", "params_deploy", "gmacs", "top1", "input_size"}


def test_list_json_has_every_variant_with_the_documented_keys():
    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows][:3] == ["A0", "A1", "A2"] and len(rows) == 14
    for row in rows:
        assert set(row) >= JSON_KEYS
    b3g4 = next(r for r in rows if r["name"] == "B3g4")
    assert b3g4["blocks"] == [4, 6, 16, 1] and b3g4["groups"] == 4 and b3g4["se"] is False
    assert b3g4["widths"] == [64, 192, 384, 768, 2560]
    assert round(b3g4["params_deploy"] / 1e6, 2) == 75.63
    assert round(b3g4["gmacs"], 2) == 16.06 and b3g4["top1"] == 80.21 and b3g4["input_size"] == 224


def test_list_table_shows_every_variant():
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0
    for name in ("A0", "B1g2", "B3g4", "D2se"):
        assert name in result.stdout
    assert "133.33M" in result.stdout and "32.83" in result.stdout


def test_show_accepts_any_spelling_and_gives_stages():
    result = runner.invoke(app, ["show", "repvgg_b3g4", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["name"] == "B3g4" and len(info["stages"]) == 5
    assert info["stages"][3]["blocks"] == 16 and info["stages"][3]["grouped_blocks"] == [1, 3, 5, 7, 9, 11, 13, 15]
    assert info["grouped_layers"] == list(range(2, 27, 2))
    table = runner.invoke(app, ["show", "D2se"])
    assert table.exit_code == 0 and "stage3" in table.stdout and "320" in table.stdout


def test_unknown_variant_is_one_line_and_exit_code_2():
    for command in (["show", "B3g5"], ["check-fusion", "B3g5"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2
        assert result.stderr.strip() == "error: unknown variant 'B3g5'; did you mean 'B3g4'?"


def test_check_fusion_json_on_a_non_square_input():
    result = runner.invoke(app, ["check-fusion", "D2se", "--size", "64x96", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["variant"] == "D2se" and (data["height"], data["width"]) == (64, 96)
    assert 0 <= data["max_abs_diff"] <= 1e-4 * max(1.0, data["max_abs_logit"])
    assert data["max_abs_logit"] > 0


def test_bad_size_is_refused():
    result = runner.invoke(app, ["check-fusion", "A0", "--size", "64y96"])
    assert result.exit_code == 2 and "invalid --size '64y96'" in result.stderr


def _modules_after(argv: list[str]) -> list[str]:
    code = (
        "import sys\n"
        "from repvgg_registry.cli import app\n"
        f"try:\n    app({argv!r})\nexcept SystemExit:\n    pass\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'torch'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line and not line.startswith(("┏", "┃", "┡", "│", "└", " "))]


def test_help_and_list_do_not_import_tensorflow():
    for argv in (["--help"], ["list"], ["list", "--json"], ["show", "A0"]):
        heavy = [m for m in _modules_after(argv) if m in ("tensorflow", "keras", "torch")]
        assert heavy == [], f"{argv} imported {heavy}"


def test_console_script_runs():
    script = Path(sys.executable).parent / "repvgg-registry"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "check-fusion" in out.stdout


def test_inspect_weights_does_not_import_tensorflow(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "stem-only.safetensors"
    save_file({"stem.conv_kxk.conv.weight": np.zeros((48, 3, 3, 3), np.float32)}, str(path))
    heavy = [m for m in _modules_after(["inspect-weights", str(path), "--json"]) if m in ("tensorflow", "keras")]
    assert heavy == []
