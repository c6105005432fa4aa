"""Every snippet in the README runs as written (issue 11, A.1).

In a fresh home folder, after the README's first command (its publish part; the venv is this one),
each ``bash`` and ``python`` block runs in document order: bash lines through ``bash``, a
``repvgg-registry serve`` line in the background on its documented port, python blocks in their own
processes. The Hugging Face and Kaggle snippets run against the in-repo stand-ins (``HF_ENDPOINT``;
``KAGGLE_API_ENVIRONMENT=TEST``, which is 127.0.0.1:7777), since the real hubs cannot be reached here.
A block may be left out only with a ``<!-- not run by ...: reason -->`` comment right above it: the
install lines (which CI itself runs) and the benchmarks.

The first command makes every deployment file, as on a fresh machine (and the snippets that load
version 1's ``.tflite`` and ``.onnx`` use them); the commands after it run with
``REPVGG_REGISTRY_FORMATS=none`` unless they pass ``--formats`` themselves, since converting again
for each later build (about 40 s each) proves nothing new: ``tests/test_deploy.py`` covers the formats.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import kaggle_standin
import pytest
from hf_standin import start_standin

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FENCE = re.compile(r"(?:<!-- (not run[^>]*) -->\n)?```(\w*)\n(.*?)```", re.S)
SERVE_PORT = 8000


def readme_blocks() -> list[tuple[str, str, str | None]]:
    """``(language, code, not-run reason)`` of every fenced block, in order."""
    text = (ROOT / "README.md").read_text()
    return [(lang, code, reason) for reason, lang, code in FENCE.findall(text)]


def test_only_documented_blocks_are_left_out():
    blocks = readme_blocks()
    left_out = [(lang, reason) for lang, _, reason in blocks if reason]
    assert len(left_out) == 2 and all(":" in reason for _, reason in left_out), left_out
    assert sum(lang in ("bash", "python") for lang, _, reason in blocks if not reason) >= 8


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _port_free(port):
            return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port} after {timeout} s")


@pytest.mark.slow
def test_every_readme_snippet_runs(tmp_path):
    if not _port_free(SERVE_PORT):
        pytest.fail(f"port {SERVE_PORT} is taken; the README's serve snippet needs it")
    server, _, hf_url = start_standin()
    kaggle_server, _, _ = kaggle_standin.start_standin()
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("REPVGG_REGISTRY_", "HF_", "XDG_", "KAGGLE")) and key != "TFHUB_CACHE_DIR"
    }
    env = kaggle_standin.subprocess_env(kaggle_standin.client_env(tmp_path / "kaggle"), base=env)
    env.update(
        HOME=str(home),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        HF_ENDPOINT=hf_url,
        HF_TOKEN="hf_readme_token",
        HF_HUB_DISABLE_XET="1",
        TFHUB_CACHE_DIR=str(tmp_path / "tfhub-cache"),
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    background: list[subprocess.Popen] = []

    def run(argv: list[str], what: str) -> None:
        proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"

    try:
        blocks = readme_blocks()
        first = blocks[0][1].splitlines()[0]
        prefix = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/"
        assert first.startswith(prefix), first
        run(["bash", "-c", first[len(prefix) :]], "the README's first command")
        env["REPVGG_REGISTRY_FORMATS"] = "none"
        for lang, code, reason in blocks:
            if reason or lang not in ("bash", "python"):
                continue
            if lang == "python":
                run([sys.executable, "-c", code], f"python snippet:\n{code}")
                continue
            for line in code.splitlines():
                command = line.split("#", 1)[0].strip()
                if not command:
                    continue
                if command.startswith("repvgg-registry serve"):
                    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed with the process
                    background.append(
                        subprocess.Popen(["bash", "-c", command], cwd=work, env=env, stdout=log, stderr=log)
                    )
                    _wait_for_port(SERVE_PORT)
                else:
                    run(["bash", "-c", command], command)
        assert (work / "build" / "a0" / "classification" / "saved_model.pb").is_file()
    finally:
        for proc in background:
            proc.terminate()
            proc.wait(timeout=30)
        server.shutdown()
        server.server_close()
        kaggle_standin.stop_standin(kaggle_server)
