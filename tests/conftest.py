"""Shared test setup: offline, no analytics, and paths to the copied reference set."""

import os
from pathlib import Path

import pytest

# Set before anything imports transformers / gradio.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
REFERENCE_DIR = FIXTURES / "reference"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The original's outputs on tiny weights (see tests/fixtures/reference/README.md)."""
    return REFERENCE_DIR


@pytest.fixture(autouse=True)
def _no_gpu_tests_without_cuda(request):
    if request.node.get_closest_marker("gpu"):
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs CUDA")
