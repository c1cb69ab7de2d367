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
from tests.process_helpers import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_EVAL = "eval_configs/minigpt4_tiny_eval.yaml"


def start(*args: str, env: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.Popen(
        [sys.executable, *args], cwd=REPO_ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def of_its_own(args: list[str], folder: Path) -> list[str]:
    """``args`` with the ``--out`` path moved into ``folder`` and a free ``--port``: runs at once
    would otherwise find the other's output locked or port taken."""
    own = {"--out": lambda arg: str(folder / arg), "--port": lambda _: str(free_port())}
    flags = ["", *args]
    return [own[flag](arg) if flag in own else arg for flag, arg in zip(flags, args)]


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
        (["-m", "minigpt4.serve", "--cfg-path", "no/such.yaml", "--port", "free"], "no/such.yaml"),
    ],
)  # fmt: skip
def test_known_errors_are_messages_without_a_traceback(args, words, tmp_path):
    # the three runs at once (each is mostly its imports, on one thread), each --out its own
    runs = [of_its_own(args, tmp_path / str(i)) for i in range(3)]
    running = [start(*runs[0]), start(*runs[1], "--debug")]
    running.append(start(*runs[2], env={cli.DEBUG_ENV: "1"}))
    done, debug, debug_env = (finish(process) for process in running)
    assert done.returncode == 1, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr
    assert "--debug" in done.stderr
    assert debug.returncode == 1 and "Traceback" in debug.stderr and words in debug.stderr
    assert "Traceback" in debug_env.stderr


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
