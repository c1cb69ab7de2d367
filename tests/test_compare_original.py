"""benchmarks/compare_original.py without the original: its refusals of what is not an original
checkout, its medians, ratios and target verdicts on made-up timings, and this project's side of
the comparison (compare_worker.py) end to end on the tiny weights. The side-by-side run itself
needs an original checkout and its environment, so no test here runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchmarks.compare_original import (
    ORIGINAL_FILES,
    PROJECT,
    check_original,
    format_table,
    summarize,
    turns,
)
from benchmarks.compare_worker import RESULT_PREFIX
from tests.model_fixtures import REPO_ROOT, TINY_DIR

SCRIPT = REPO_ROOT / "benchmarks" / "compare_original.py"
WORKER = REPO_ROOT / "benchmarks" / "compare_worker.py"


def fake_checkout(root, with_v2: bool = False):
    for name in ORIGINAL_FILES:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    if with_v2:
        (root / "minigpt4" / "models" / "minigpt_v2.py").write_text("")
    return root


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_a_folder_that_is_not_an_original_checkout_is_refused(tmp_path):
    proc = run_script("--original", str(tmp_path), "--original-python", sys.executable)
    assert proc.returncode == 2
    assert f"--original {tmp_path}: not a checkout of the original MiniGPT-4" in proc.stderr
    assert "train.py" in proc.stderr and "github.com/Vision-CAIR/MiniGPT-4" in proc.stderr


def test_this_project_and_a_missing_folder_are_refused(tmp_path):
    proc = run_script("--original", str(REPO_ROOT), "--original-python", sys.executable)
    assert proc.returncode == 2
    assert "this is this project" in proc.stderr
    missing = tmp_path / "nowhere"
    proc = run_script("--original", str(missing), "--original-python", sys.executable)
    assert proc.returncode == 2 and f"--original {missing}: no such folder" in proc.stderr


def test_an_original_python_that_is_not_executable_is_refused(tmp_path):
    checkout = fake_checkout(tmp_path / "orig")
    bad = tmp_path / "python"
    proc = run_script("--original", str(checkout), "--original-python", str(bad))
    assert proc.returncode == 2
    assert f"--original-python {bad}: not an executable" in proc.stderr


def test_checkouts_are_labelled_v1_or_head(tmp_path):
    assert check_original(str(fake_checkout(tmp_path / "a"))) == "v1"
    assert check_original(str(fake_checkout(tmp_path / "b", with_v2=True))) == "HEAD"


def test_medians_ratios_and_targets_on_made_up_timings():
    samples = {
        "train_step": {PROJECT: [0.03, 0.01, 0.02], "v1": [0.06, 0.04, 0.08], "HEAD": [0.05]},
        "generate": {PROJECT: [0.08, 0.09, 0.07], "v1": [0.1, 0.2, 0.1], "HEAD": [0.04, 0.04]},
        "process_startup": {PROJECT: [7.0, 9.0], "v1": [10.0, 10.0], "HEAD": [12.0, 8.0]},
        "encode": {PROJECT: [0.01], "v1": [0.02]},  # HEAD not measured: no row
    }
    rows = {row.key: row for row in summarize(samples, ["v1", "HEAD"])}
    assert list(rows) == ["train_step", "generate", "process_startup"]  # ROWS order
    step = rows["train_step"]
    assert (step.project, step.originals, step.repeats) == (0.02, (0.06, 0.05), 1)
    assert step.ratios() == pytest.approx((1 / 3, 0.4))
    assert rows["generate"].ratios() == pytest.approx((0.8, 2.0))
    assert rows["process_startup"].ratios() == pytest.approx((0.8, 0.8))

    # the project's share of its bound: 5 ms of a 20 ms median is 25 %; whole processes have none
    bounds = {"train_step": 0.005, "generate": 0.0004}
    table = format_table(list(rows.values()), ["v1", "HEAD"], bounds).splitlines()
    assert table[0] == (
        "| operation | n | project | of bound | original v1 | ratio vs v1 | original HEAD | "
        "ratio vs HEAD | target |"
    )
    assert table[2] == (
        "| training step (batch 2) | 1 | 20.0 ms | 25 % | 60.0 ms | 0.33 | 50.0 ms | 0.40 | "
        "<= 0.6x: met |"
    )
    assert table[3].endswith(
        "| 80.0 ms | 0.5 % | 100.0 ms | 0.80 | 40.0 ms | 2.00 | <= 0.7x: missed |"
    )
    assert "| 8.00 s | - | 10.00 s | 0.80 | 10.00 s | 0.80 | <= 0.7x: missed |" in table[4]


def test_sides_take_turns_in_alternating_order():
    assert [turns(["a", "b", "c"], r) for r in range(3)] == [
        ["a", "b", "c"], ["c", "b", "a"], ["a", "b", "c"]
    ]  # fmt: skip


def test_the_project_side_runs_every_operation_on_the_tiny_weights():
    cmd = [sys.executable, str(WORKER), "--side", "project", "--repo", str(REPO_ROOT),
           "--weights", str(TINY_DIR), "--serve"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, input="encode\ntrain_step\nchat_answer\ngenerate\nnope\nbounds\n",
                          capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line[len(RESULT_PREFIX) :]) for line in proc.stdout.splitlines()
               if line.startswith(RESULT_PREFIX)]  # fmt: skip
    ready, *ops, unknown, bounds = results
    assert ready["ready"] and ready["from"] == str(REPO_ROOT)
    assert [r["op"] for r in ops] == ["encode", "train_step", "chat_answer", "generate"]
    assert all(r["seconds"] > 0 for r in ops)
    assert 0 < ops[2]["tokens"] <= 32 and ops[3]["tokens"] == 32
    assert "unknown operation 'nope'" in unknown["error"]
    # each operation's bound on this machine, to print the project's share of it
    assert sorted(bounds["bounds"]) == sorted(r["op"] for r in ops)
    assert all(seconds > 0 for seconds in bounds["bounds"].values())
    assert bounds["roofline"].startswith("matmul peak GFLOP/s: fp32")
