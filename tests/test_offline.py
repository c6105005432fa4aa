"""The Hugging Face parts fail fast, quietly and in one line (issue 11).

Offline (a host that does not resolve, a refused connection, ``HF_HUB_OFFLINE``) nothing is
retried and the error comes at once; an endpoint that accepts and never answers is given up on
within the configured limits; 5xx are retried, but not past the deadline; and huggingface_hub's
own log lines and warnings never reach the terminal. The timm weights download, the Hugging Face
hub's reads and the publish preflight are driven against closed ports, an unresolvable host
(``.invalid``: no DNS here, and none anywhere), a silent server and the stand-in.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub
import pytest
from hf_standin import closed_port, start_silent_server
from huggingface_hub import constants as hf_constants
from huggingface_hub.utils import _http as hf_http
from huggingface_hub.utils import logging as hf_logging

from repvgg_registry.errors import HubUnreachableError, UsageError, WeightsError
from repvgg_registry.registry.huggingface import HuggingFaceHub, hf_call
from repvgg_registry.variants.checkpoints import download_timm, timm_repo_id
from repvgg_registry.variants.table import get_variant

SECRET = "hf_secret_token_that_must_never_show"
UNRESOLVABLE = "http://does-not-exist.invalid"
CLI = Path(sys.executable).with_name("repvgg-registry")


@pytest.fixture(autouse=True)
def _private_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "tfhub-cache"))
    for name in ("REPVGG_REGISTRY_HF_TIMEOUT", "REPVGG_REGISTRY_HF_DEADLINE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def silent():
    url, close = start_silent_server()
    yield url
    close()


def _closed() -> str:
    return f"http://127.0.0.1:{closed_port()}"


def _assert_one_line(message: str, *needles: str) -> None:
    assert "\n" not in message and message == message.strip(), message
    assert SECRET not in message
    for needle in needles:
        assert needle in message, message


# ----- the timm weights download -------------------------------------------------------------
@pytest.mark.parametrize("endpoint", ["closed", UNRESOLVABLE], ids=["connection-refused", "dns-failure"])
def test_timm_download_offline_fails_at_once_quietly_in_one_line(endpoint, monkeypatch, capfd):
    endpoint = _closed() if endpoint == "closed" else endpoint
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    capfd.readouterr()
    started = time.monotonic()
    with pytest.raises((WeightsError, HubUnreachableError)) as err:
        download_timm(get_variant("B0"))
    assert time.monotonic() - started < 5
    message = str(err.value)
    _assert_one_line(message, endpoint, "timm/repvgg_b0", "--weights PATH", "--weights random")
    assert ("refused" if "127.0.0.1" in endpoint else "does not resolve") in message
    out, errs = capfd.readouterr()
    assert out == "" and errs == "", (out, errs)


def test_timm_download_under_hf_hub_offline_names_it(monkeypatch, capfd):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_ENDPOINT", _closed())
    capfd.readouterr()
    started = time.monotonic()
    with pytest.raises(WeightsError) as err:
        download_timm(get_variant("A0"))
    assert time.monotonic() - started < 2
    _assert_one_line(str(err.value), "HF_HUB_OFFLINE", "not in the local cache", "--weights random")
    assert capfd.readouterr() == ("", "")


def test_timm_download_uses_the_cache_without_asking_the_hub(standin, monkeypatch):
    """Downloaded once from the stand-in, the weights then come from the cache with the hub gone."""
    state, url = standin
    spec = get_variant("A0")
    repo_id = timm_repo_id(spec)
    api = huggingface_hub.HfApi(endpoint=url, token="hf_test_token")
    api.create_repo(repo_id, exist_ok=True)
    api.upload_file(path_or_fileobj=b"not really safetensors", path_in_repo="model.safetensors", repo_id=repo_id)
    monkeypatch.setenv("HF_ENDPOINT", url)
    first = download_timm(spec)
    assert first.read_bytes() == b"not really safetensors"
    monkeypatch.setenv("HF_ENDPOINT", _closed())
    started = time.monotonic()
    assert download_timm(spec) == first
    assert time.monotonic() - started < 2


def test_timm_download_gives_up_on_a_silent_endpoint(silent, monkeypatch, capfd):
    monkeypatch.setenv("HF_ENDPOINT", silent)
    monkeypatch.setenv("REPVGG_REGISTRY_HF_TIMEOUT", "1")
    monkeypatch.setenv("REPVGG_REGISTRY_HF_DEADLINE", "2")
    capfd.readouterr()
    started = time.monotonic()
    with pytest.raises(WeightsError) as err:
        download_timm(get_variant("B0"))
    assert time.monotonic() - started < 15
    _assert_one_line(str(err.value), "no answer within 1 s", " after ", "--weights random")
    assert capfd.readouterr() == ("", "")


# ----- the Hugging Face hub ------------------------------------------------------------------
@pytest.mark.parametrize("endpoint", ["closed", UNRESOLVABLE], ids=["connection-refused", "dns-failure"])
def test_hub_reads_offline_fail_at_once(endpoint, capfd):
    endpoint = _closed() if endpoint == "closed" else endpoint
    hf = HuggingFaceHub("org", token=SECRET, endpoint=endpoint)  # default retries and backoff
    capfd.readouterr()
    started = time.monotonic()
    with pytest.raises(HubUnreachableError) as err:
        hf.versions("A0")
    assert time.monotonic() - started < 5
    _assert_one_line(str(err.value), endpoint, "did not answer list_repo_refs(org/repvgg-a0)", "HF_ENDPOINT")
    assert capfd.readouterr() == ("", "")


def test_hf_hub_offline_refuses_at_once_naming_it(monkeypatch, capfd):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    hf = HuggingFaceHub("org", token=SECRET, endpoint=_closed())
    capfd.readouterr()
    started = time.monotonic()
    for call in (lambda: hf.versions("A0"), lambda: hf.preflight("a0", version=1)):
        with pytest.raises(HubUnreachableError) as err:
            call()
        _assert_one_line(str(err.value), "HF_HUB_OFFLINE is set", "hf://org", "unset HF_HUB_OFFLINE")
        assert str(err.value).endswith("and rerun")
    assert time.monotonic() - started < 1
    assert capfd.readouterr() == ("", "")


def test_silent_endpoint_is_given_up_on_within_the_limits(silent, capfd):
    hf = HuggingFaceHub("org", token=SECRET, endpoint=silent, backoff_s=0.2, timeout_s=1, deadline_s=3)
    capfd.readouterr()
    started = time.monotonic()
    with pytest.raises(HubUnreachableError) as err:
        hf.versions("A0")
    took = time.monotonic() - started
    assert 1 <= took < 10, took
    _assert_one_line(str(err.value), "did not answer list_repo_refs(org/repvgg-a0) after", "no answer within 1 s")
    assert capfd.readouterr() == ("", "")


def test_5xx_is_retried_with_backoff_but_not_past_the_deadline(standin, capfd):
    state, url = standin
    hf = HuggingFaceHub("org-5xx", token="hf_test_token", endpoint=url, retries=50, backoff_s=0.1, deadline_s=2)
    state.fail["refs"] = 1000
    before = state.calls.count("refs")
    capfd.readouterr()
    started = time.monotonic()
    try:
        with pytest.raises(HubUnreachableError) as err:
            hf.versions("A0")
    finally:
        state.fail["refs"] = 0
    took = time.monotonic() - started
    tries = state.calls.count("refs") - before
    assert took < 5, took
    assert 3 <= tries < 50, tries  # retried with growing waits, stopped by the deadline, not by the count
    _assert_one_line(str(err.value), f"after {tries} tries", "HTTP 500")
    assert capfd.readouterr() == ("", "")
    state.fail["refs"] = 1  # a transient 5xx is retried and then answered
    assert hf.versions("A0") == []


def test_client_settings_are_restored_after_a_call():
    factory = getattr(hf_http, "_GLOBAL_CLIENT_FACTORY", None)
    verbosity = hf_logging.get_verbosity()
    httpx_level = logging.getLogger("httpx2").level
    with pytest.raises(HubUnreachableError):
        HuggingFaceHub("org", token=SECRET, endpoint=_closed()).versions("A0")
    assert getattr(hf_http, "_GLOBAL_CLIENT_FACTORY", None) is factory
    assert hf_logging.get_verbosity() == verbosity
    assert logging.getLogger("httpx2").level == httpx_level


def test_limits_come_from_the_environment_and_are_checked(monkeypatch):
    monkeypatch.setenv("REPVGG_REGISTRY_HF_TIMEOUT", "2.5")
    monkeypatch.setenv("REPVGG_REGISTRY_HF_DEADLINE", "7")
    hf = HuggingFaceHub("org", token=SECRET, endpoint=_closed())
    assert (hf.network.timeout_s, hf.network.deadline_s) == (2.5, 7.0)
    monkeypatch.setenv("REPVGG_REGISTRY_HF_TIMEOUT", "soon")
    with pytest.raises(UsageError, match="REPVGG_REGISTRY_HF_TIMEOUT 'soon': use a number of seconds"):
        HuggingFaceHub("org", token=SECRET)
    with pytest.raises(UsageError, match="REPVGG_REGISTRY_HF_DEADLINE"):
        HuggingFaceHub("org", token=SECRET, timeout_s=1, deadline_s=0)


def test_hf_call_leaves_other_errors_alone():
    with pytest.raises(KeyError):
        hf_call("a lookup", lambda: {}["missing"], endpoint=_closed())


# ----- the command line ----------------------------------------------------------------------
def _cli(args: list[str], env: dict[str, str], tmp_path: Path) -> tuple[subprocess.CompletedProcess, float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "REPVGG_REGISTRY_"))}
    started = time.monotonic()
    proc = subprocess.run(
        [str(CLI), *args],
        capture_output=True,
        text=True,
        env={
            **clean,
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "HF_HUB_DISABLE_XET": "1",
            "HF_HOME": str(tmp_path / "hf-home"),
            "HF_HUB_CACHE": str(tmp_path / "empty-hf-cache"),
            **env,
        },
        timeout=120,
    )
    return proc, time.monotonic() - started


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert SECRET not in proc.stderr + proc.stdout
    return lines[0]


def test_cli_publish_offline_is_one_line_within_seconds(tmp_path):
    """``publish B0`` (default ``--weights timm``) with the hub refusing connections and an empty
    cache: one ``error:`` line, at once, and a summary that says nothing was published (no table
    of published versions)."""
    proc, took = _cli(
        ["publish", "B0", "--hub", str(tmp_path / "hub")], {"HF_ENDPOINT": _closed(), "HF_TOKEN": SECRET}, tmp_path
    )
    assert proc.returncode != 0
    line = _one_error_line(proc)
    assert "refused" in line and "--weights random" in line
    assert proc.stdout.startswith("nothing published to") and "handles" not in proc.stdout
    assert took < 10, took


def test_cli_versions_under_hf_hub_offline_is_one_line_at_once(tmp_path):
    proc, took = _cli(["versions", "A0", "--hub", "hf://org"], {"HF_HUB_OFFLINE": "1", "HF_TOKEN": SECRET}, tmp_path)
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert "HF_HUB_OFFLINE is set" in line and line.endswith("and rerun")
    assert took < 10, took


def test_cli_versions_against_a_silent_endpoint_gives_up(silent, tmp_path):
    env = {
        "HF_ENDPOINT": silent,
        "HF_TOKEN": SECRET,
        "REPVGG_REGISTRY_HF_TIMEOUT": "1",
        "REPVGG_REGISTRY_HF_DEADLINE": "3",
    }
    proc, took = _cli(["versions", "A0", "--hub", "hf://org"], env, tmp_path)
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert "did not answer" in line and "no answer within 1 s" in line
    assert took < 60, took


@pytest.mark.parametrize("hub", ["hf://bad name!", "hf://-bad--"])
def test_cli_refuses_a_bad_hf_namespace_before_building(hub, tmp_path):
    proc, took = _cli(["publish", "A0", "--weights", "random", "--hub", hub], {"HF_TOKEN": SECRET}, tmp_path)
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert "invalid Hugging Face namespace" in line and "96 characters" in line
    assert "Traceback" not in proc.stderr
    assert took < 30, took
