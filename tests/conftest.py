"""Shared fixtures.

torch (and timm, which loads torchvision and triton) must be imported before TensorFlow: the
other order segfaults on these machines (REFERENCE section 6).
"""

from __future__ import annotations

import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The Hugging Face stand-in speaks LFS, not Xet; huggingface_hub reads this at import (timm imports it).
os.environ["HF_HUB_DISABLE_XET"] = "1"
# Builds make no LiteRT / ONNX / serving files unless a test asks (tests/test_deploy.py does, and
# the README test runs the README's commands without this): the conversions take a build's time
# twice over, and the many hub tests only move, serve and checksum the SavedModels and .keras files.
os.environ["REPVGG_REGISTRY_FORMATS"] = "none"

# isort: off
import timm  # noqa: F401, E402  (torch first, then TensorFlow)
import torch  # noqa: F401, E402

# isort: on

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _module_tmp_removed(request, tmp_path_factory):
    """Removes what a module's fixtures made with ``tmp_path_factory`` once the module is done.

    ``tmp_path_retention_policy = "failed"`` removes a passing test's ``tmp_path`` when it ends, but
    module fixtures' folders (hubs, builds, checkpoints) stay until the whole session passes: a full
    run would pile up every module's, and a failing or killed run leaves them all behind (pytest keeps
    three runs). As with the policy, a module with a failure keeps its folders to look at. Autouse, so
    it is set up before the module's own fixtures and torn down after them.
    """
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed == failed_before:
        for path in set(base.iterdir()) - before:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="module")
def standin():
    """The Hugging Face Hub stand-in (tests/hf_standin.py) on 127.0.0.1: ``(state, base_url)``."""
    from hf_standin import start_standin

    server, state, url = start_standin()
    yield state, url
    server.shutdown()
    server.server_close()
