"""What ``pip install .`` installs: the library and its default YAMLs, not the checkout's tools.

``tiny_world/`` (the tiny model's builders and its checkpoint) stays at the repository root,
importable from a checkout as ``tiny_world.*``, like ``train_configs/`` and ``eval_configs/``.
The wheel is built from a copy of the sources, so the build leaves nothing in the checkout.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "minigpt4", "tiny_world")


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> list[str]:
    pytest.importorskip("setuptools", reason="the build backend of pyproject.toml")
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        entry = REPO_ROOT / name
        if entry.is_dir():
            shutil.copytree(entry, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(entry, src / name)
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*cmd, "-w", str(out), str(src)], check=True, timeout=300)
    (wheel,) = out.glob("minigpt4-*.whl")
    return zipfile.ZipFile(wheel).namelist()


def test_wheel_holds_the_library_and_its_default_configs(wheel_names):
    tops = {name.split("/")[0] for name in wheel_names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"minigpt4"}
    assert "minigpt4/__init__.py" in wheel_names
    assert "minigpt4/configs/models/minigpt4.yaml" in wheel_names


def test_wheel_leaves_the_tiny_world_in_the_checkout(wheel_names):
    assert not [name for name in wheel_names if "tiny_world" in name or name.endswith(".pth")]
    assert (REPO_ROOT / "tiny_world" / "checkpoint" / "pretrained_minigpt4_tiny.pth").is_file()
