"""The CLI's one error root (issue 11, C6 and the low-severity D-items): every failure a user can
cause is one `error:` line with a non-zero exit code, never a traceback or a rich box; output is
readable at 80 columns and shows no Python reprs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from repvgg_registry import errors
from repvgg_registry.cli import _json_safe, app

runner = CliRunner()
SCRIPT = str(Path(sys.executable).parent / "repvgg-registry")


def _one_error_line(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and "╭" not in result.stderr
    return lines[0]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["publish", "A0", "--version", "0"], "invalid --version 0"),
        (["publish", "A0", "--version", "99999999999999999999"], "invalid --version"),
        (["check-fusion", "A0", "--batch", "0"], "invalid --batch 0"),
        (["check-fusion", "A0", "--batch", "x"], "Invalid value for '--batch'"),
        (["check-fusion", "A0", "--size", "10000"], "height and width must be from 1 to 1024"),
        (["check-fusion", "A0", "--size", "1024", "--batch", "64"], "too large"),
        (["check-fusion", "A0", "--seed", "-1"], "invalid --seed -1"),
        (["check-fusion", "A0", "--seed", "99999999999"], "invalid --seed 99999999999"),
        (["serve", "--port", "99999"], "invalid --port 99999"),
        (["serve", "--workers", "0"], "invalid --workers 0"),
        (["no-such-command"], "No such command 'no-such-command'"),
        (["show", "A0", "--bogus"], "No such option: --bogus"),
        (["show"], "Missing argument 'VARIANT'"),
        (["publish"], "name at least one variant"),
        (["publish", "A0", "--hub", "/tmp/x", "--namespace", ".."], "invalid namespace '..'"),
        (["publish", "A0", "--hub", "/tmp/x", "--namespace", "MyOrg"], "invalid namespace 'MyOrg'"),
    ],
)
def test_usage_errors_are_one_line(argv, expected):
    line = _one_error_line(runner.invoke(app, argv))
    assert expected in line


def test_version_flag_prints_the_tool_version():
    from repvgg_registry import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"repvgg-registry {__version__}"


def test_help_shows_no_bool_metavars():
    for command in (["--help"], ["publish", "--help"], ["build", "--help"], ["list", "--help"]):
        result = runner.invoke(app, command, env={"COLUMNS": "100"})
        assert result.exit_code == 0 and "<bool>" not in result.stdout, result.stdout


def test_json_never_prints_nan():
    cleaned = _json_safe({"max_abs_diff": float("nan"), "rows": [float("inf"), 1.5], "ok": False})
    assert json.dumps(cleaned, allow_nan=False) == '{"max_abs_diff": null, "rows": [null, 1.5], "ok": false}'


def test_errors_subclass_the_builtins_they_resemble():
    assert issubclass(errors.WeightsError, ValueError) and issubclass(errors.WeightsError, errors.RegistryError)
    assert issubclass(errors.HubUnreachableError, ConnectionError)
    assert issubclass(errors.NotPublishedError, LookupError)
    assert issubclass(errors.InvalidHandleError, ValueError)
    assert issubclass(errors.BuildError, errors.RegistryError)
    error = errors.NotPublishedError("x", handle="repvgg/a0/classification/3", available=(1, 2))
    assert error.available == (1, 2) and error.handle.endswith("/3")
    assert "\n" not in str(errors.WeightsError("two\nlines\x1b[2J"))
    assert "\\x1b" in str(errors.WeightsError("esc \x1b[2J"))


def test_build_error_and_the_error_root_import_without_tensorflow():
    code = (
        "import sys\n"
        "from repvgg_registry.errors import BuildError, RegistryError\n"
        "from repvgg_registry.registry.hub import Handle\n"
        "import repvgg_registry.cli\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _render(columns: int, argv: list[str]) -> str:
    import repvgg_registry.cli as cli

    saved = cli.console
    cli.console = Console(width=columns, record=True, force_terminal=False)
    try:
        result = runner.invoke(app, argv)
        assert result.exit_code == 0, result.output
        return cli.console.export_text()
    finally:
        cli.console = saved


def test_list_fits_80_columns_without_cutting_cells(tmp_path):
    text = _render(80, ["list", "--hub", str(tmp_path)])
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    for name in ("A0", "B1g2", "B3g4", "D2se"):
        assert name in text
    assert "120.39M" in text and "32.83" in text and "83.55" in text
    wide = _render(200, ["list", "--hub", str(tmp_path)])
    assert "params train" in wide and "133.33M" in wide


def test_corrupt_index_makes_list_warn(tmp_path):
    (tmp_path / "index.json").write_text("{not json")
    result = runner.invoke(app, ["list", "--hub", str(tmp_path)])
    assert result.exit_code == 0 and "warning: cannot read what" in result.stderr


def test_inspect_weights_of_a_missing_file_is_one_line(tmp_path):
    line = _one_error_line(runner.invoke(app, ["inspect-weights", str(tmp_path / "nope.safetensors")]))
    assert "checkpoint file not found" in line


def test_verify_of_a_path_that_is_no_version_is_one_line(tmp_path):
    for target in ("/", str(tmp_path)):
        line = _one_error_line(runner.invoke(app, ["verify", target, "--hub", str(tmp_path / "hub")]))
        assert "verify checks those" in line


def test_model_card_escapes_the_weights_file_name_and_flags_random_weights():
    from repvgg_registry.publish.card import RANDOM_WEIGHTS_BANNER, markdown_text, random_weights_banner

    hostile = "<img src=x onerror=alert(1)>|x\ny.safetensors"
    safe = markdown_text(hostile)
    assert "<img" not in safe and "\n" not in safe and "&lt;img" in safe
    assert not re.search(r"(?<!\\)\|", safe)  # every | escaped: it cannot split a table row
    assert RANDOM_WEIGHTS_BANNER in random_weights_banner({"source": "random"})
    assert random_weights_banner({"source": "timm"}) == ""


def test_build_out_refuses_files_and_foreign_folders_before_building(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    for argv, expected in (
        (["build", "A0", "--weights", "random", "--out", str(target), "--overwrite"], "not an earlier build"),
        (["build", "A0", "--weights", "random", "--out", str(target / "x")], "is a file, not a folder"),
        (["build", "A0", "--weights", "random", "--out", str(tmp_path), "--overwrite"], "not an earlier build"),
    ):
        assert expected in _one_error_line(runner.invoke(app, argv))
    assert target.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no .old-PID, no staging left


def test_verify_does_not_follow_symlink_loops(tmp_path):
    import os
    import time

    task = tmp_path / "repvgg" / "a0" / "classification"
    version = task / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"x")
    os.symlink(".", version / "a")
    os.symlink(".", version / "b")
    (task / "1.manifest.json").write_text(json.dumps({"task": "classification", "files": [], "archive": {}}))
    start = time.monotonic()
    result = runner.invoke(app, ["verify", str(version), "--hub", str(tmp_path / "hub")])
    assert time.monotonic() - start < 30
    line = _one_error_line(result, code=1)
    assert "symlink" in line


def test_model_card_of_a_hostile_file_name_stays_inert():
    from repvgg_registry.publish.build import artifact_metadata
    from repvgg_registry.publish.card import model_card
    from repvgg_registry.variants import get_variant

    hostile = "<img src=x onerror=alert(1)>|x\nline.safetensors"
    weights = {"source": hostile, "file": hostile, "sha256": "ab" * 32, "scheme": "timm", "form": "train"}
    card = model_card(artifact_metadata(get_variant("A0"), "classification", weights, 0.0, 1000))
    assert "<img" not in card and "onerror=alert(1)>" not in card
    row = next(line for line in card.splitlines() if line.startswith("| weights |"))
    assert len(re.findall(r"(?<!\\)\|", row)) == 3 and "&lt;img" in row  # one cell: the name's "|" is escaped
    assert "random weights" not in card
    random_card = model_card(artifact_metadata(get_variant("A0"), "classification", {"source": "random"}, 0.0, 1000))
    assert "random weights, for pipeline tests only; the reference accuracy does not apply" in random_card
    assert "does not apply: random weights" in random_card
