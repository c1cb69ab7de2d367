"""Every command asks torch for transparent huge pages for its large CPU tensors (the weights
decoding reads once per token), unless the user chose: the variable is set before ``main``
runs, a user's value wins, and in a fresh process that goes through ``run_command`` a large
tensor lands in huge pages where the kernel gives them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from minigpt4.common import cli

REPO = Path(__file__).resolve().parents[1]
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")

_COMMAND = """
import torch
from minigpt4.common.cli import run_command

def main():
    weights = torch.ones((64 << 20) // 4)  # 64 MiB, as a layer's weight
    with open("/proc/self/smaps_rollup") as f:
        line = next(l for l in f if l.startswith("AnonHugePages:"))
    print(int(line.split()[1]) * 1024, weights.numel())

run_command(main, "probe")
"""


@pytest.mark.parametrize(("user", "seen"), [(None, "1"), ("0", "0")])
def test_set_before_main_unless_the_user_chose(monkeypatch, user, seen):
    if user is None:
        monkeypatch.delenv(cli.HUGE_PAGES_ENV, raising=False)
    else:
        monkeypatch.setenv(cli.HUGE_PAGES_ENV, user)
    values = []
    cli.run_command(lambda: values.append(os.environ[cli.HUGE_PAGES_ENV]), "probe")
    assert values == [seen]


def _huge_bytes(env: dict) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _COMMAND], cwd=REPO, env=env, capture_output=True, text=True,
        check=True, timeout=120,
    ).stdout  # fmt: skip
    return int(out.split()[0])


def test_a_large_tensor_of_a_command_lands_in_huge_pages():
    if not THP_SETTING.exists() or "[never]" in THP_SETTING.read_text():
        pytest.skip(f"{THP_SETTING}: this kernel gives no transparent huge pages")
    env = {k: v for k, v in os.environ.items() if k != cli.HUGE_PAGES_ENV}
    assert _huge_bytes(env) >= 32 << 20
    assert _huge_bytes({**env, cli.HUGE_PAGES_ENV: "0"}) < _huge_bytes(env)
