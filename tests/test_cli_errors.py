"""Commands print a known error as its message and exit 1, no traceback; ``--debug`` shows it;
and they pick a CPU thread count when ``OMP_NUM_THREADS`` is unset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minigpt4.common import cli

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_EVAL = "eval_configs/minigpt4_tiny_eval.yaml"


def command(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            ["-m", "minigpt4.inference", "--cfg-path", TINY_EVAL, "--images", "README.md",
             "--out", "x.jsonl", "--device", "cpu", "--options", "model.llama_model=/nowhere"],
            "model.llama_model: /nowhere: not found",
        ),
        (
            ["-m", "minigpt4.evaluate", "--cfg-path", TINY_EVAL, "--benchmark", "pope",
             "--data", "/nowhere", "--out", "r.json", "--device", "cpu"],
            "--data /nowhere: no such file or folder",
        ),
        (
            ["train.py", "--cfg-path", "train_configs/minigpt4_stage1_pretrain.yaml",
             "--options", "run.max_epoch=0"],
            "run.max_epoch = 0: must be an integer >= 1",
        ),
        (["-m", "minigpt4.serve", "--cfg-path", "no/such.yaml"], "no/such.yaml"),
    ],
)  # fmt: skip
def test_known_errors_are_messages_without_a_traceback(args, words, tmp_path):
    done = command(*args)
    assert done.returncode == 1, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr
    assert "--debug" in done.stderr
    debug = command(*args, "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and words in debug.stderr
    assert "Traceback" in command(*args, env={cli.DEBUG_ENV: "1"}).stderr


def test_a_library_failure_keeps_its_traceback():
    def fails_in_torch() -> None:
        torch.zeros(2) @ torch.zeros(3)

    with pytest.raises(RuntimeError) as info:
        fails_in_torch()
    assert not cli.raised_by_project(info.value)

    def project_message() -> None:
        raise ValueError("model.x is wrong: set it to y")

    with pytest.raises(ValueError) as info:
        project_message()
    assert cli.raised_by_project(info.value)


def test_threads_follow_the_model_size_unless_chosen(monkeypatch, caplog):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        caplog.set_level("INFO", logger="minigpt4.common.cli")
        cli.choose_threads(10_000_000)
        assert torch.get_num_threads() == 1 and "CPU threads: 1 (a small model" in caplog.text
        cli.choose_threads(7_000_000_000)
        assert torch.get_num_threads() == len(os.sched_getaffinity(0))
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(2)
        cli.choose_threads(10_000_000)  # the user's choice stands
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
