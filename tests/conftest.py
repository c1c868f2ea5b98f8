"""Shared test plumbing: the tolerance table, Keras fixtures and parity helpers."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.helpers import ATOL  # noqa: E402,F401

# Under pytest-xdist (-n 2) each worker gets one thread, so workers do not fight over the cores.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(params=["keras", "tf_keras"])
def klib(request):
    """The Keras library under test: Keras 3 (``keras``) or Keras 2 (``tf_keras``)."""
    from tests.helpers import import_keras

    return import_keras(request.param)


@pytest.fixture
def keras3():
    from tests.helpers import import_keras

    return import_keras("keras")


@pytest.fixture
def tf_keras():
    from tests.helpers import import_keras

    return import_keras("tf_keras")
