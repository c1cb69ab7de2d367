"""Training stops cleanly: at a non-finite loss (nothing non-finite saved, non-zero exit), and on
a pre-emption signal (checkpoint_latest.pth at the end of the step, resumed exactly)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train
from minigpt4.runners.step_guard import NonFiniteLossError, PreemptedError
from tests.train_helpers import write_align_folder, write_stage2_config

REPO_ROOT = Path(__file__).resolve().parents[1]


def only_job(folder: Path) -> Path:
    (job,) = [p for p in folder.iterdir() if p.is_dir()]
    return job


@pytest.fixture(scope="module")
def align(tmp_path_factory) -> Path:
    return write_align_folder(tmp_path_factory.mktemp("align") / "cc_sbu_align", n=5)


def config(tmp_path: Path, align: Path, name: str, **run) -> Path:
    run = {"max_epoch": 2, "iters_per_epoch": 4, **run}
    return write_stage2_config(tmp_path / f"{name}.yaml", align, tmp_path / name, **run)


def test_an_exploding_lr_stops_at_the_first_non_finite_step(tmp_path, align):
    cfg = config(tmp_path, align, "nan", init_lr=1e30, warmup_lr=1e30)
    with pytest.raises(NonFiniteLossError, match=r"not finite at epoch 0, iteration \d"):
        train.main(["--cfg-path", str(cfg)])
    assert not list(only_job(tmp_path / "nan").glob("*.pth"))  # nothing saved
    done = subprocess.run(
        [sys.executable, "train.py", "--cfg-path", str(cfg)],
        cwd=REPO_ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 1 and "Lower run.init_lr" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_nan_checkpoint_is_not_trained_on(tmp_path, align):
    cfg = config(tmp_path, align, "good", max_epoch=1)
    train.main(["--cfg-path", str(cfg)])
    good = only_job(tmp_path / "good") / "checkpoint_0.pth"
    state = torch.load(good, weights_only=True)
    state["model"]["llama_proj.weight"][0, 0] = float("nan")
    state["epoch"], state["train_state"]["next_epoch"] = 0, 0
    torch.save(state, tmp_path / "nan.pth")
    resume = config(tmp_path, align, "resumed", resume_ckpt_path=str(tmp_path / "nan.pth"))
    with pytest.raises(NonFiniteLossError, match="epoch 0, iteration 0"):
        train.main(["--cfg-path", str(resume)])
    patient = config(tmp_path, align, "patient", resume_ckpt_path=str(tmp_path / "nan.pth"),
                     nonfinite_patience=100)  # fmt: skip
    with pytest.raises(NonFiniteLossError, match="not saving a checkpoint"):
        train.main(["--cfg-path", str(patient)])  # skipped steps, but never a NaN checkpoint
    assert not list(only_job(tmp_path / "patient").glob("*.pth"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_preemption_saves_at_the_end_of_the_step_and_resumes_exactly(
    tmp_path, align, monkeypatch, signum
):
    full_cfg = config(tmp_path, align, "full")
    train.main(["--cfg-path", str(full_cfg)])
    full = torch.load(only_job(tmp_path / "full") / "checkpoint_1.pth", weights_only=True)

    from minigpt4.tasks.base_task import BaseTask

    step, calls = BaseTask.train_step, []

    def signalled_at_the_sixth_batch(self, model, samples):
        calls.append(1)
        if len(calls) == 6:  # epoch 1, iteration 1: mid-step
            os.kill(os.getpid(), signum)
        return step(self, model, samples)

    monkeypatch.setattr(BaseTask, "train_step", signalled_at_the_sixth_batch)
    cut_cfg = config(tmp_path, align, "cut")
    with pytest.raises(PreemptedError, match=rf"stopped by {signum.name} at epoch 1, iteration 2"):
        train.main(["--cfg-path", str(cut_cfg)])
    monkeypatch.undo()
    latest = only_job(tmp_path / "cut") / "checkpoint_latest.pth"
    saved = torch.load(latest, weights_only=True)
    assert saved["train_state"]["next_epoch"] == 1 and saved["train_state"]["next_iter"] == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers put back

    resume_cfg = config(tmp_path, align, "resumed", resume_ckpt_path=str(latest))
    train.main(["--cfg-path", str(resume_cfg)])
    resumed = torch.load(only_job(tmp_path / "resumed") / "checkpoint_1.pth", weights_only=True)
    for key in ("llama_proj.weight", "llama_proj.bias"):
        assert torch.equal(full["model"][key], resumed["model"][key]), key


def test_sigterm_to_a_two_process_run_saves_on_every_rank(tmp_path, align):
    """torchrun forwards SIGTERM to both ranks; both finish the step, save together, stop."""
    cfg = config(tmp_path, align, "ddp", max_epoch=50, iters_per_epoch=4, log_freq=1)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "train.py", "--cfg-path", str(cfg), "--options", "run.device=cpu"]  # fmt: skip
    log = tmp_path / "ddp.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ, OMP_NUM_THREADS="1"))  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while "Train: data epoch: [1]" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "stopped by SIGTERM at epoch" in text, text
    latest = only_job(tmp_path / "ddp") / "checkpoint_latest.pth"
    saved = torch.load(latest, weights_only=True)
    assert len(saved["rank_states"]) == 2 and saved["train_state"]["next_epoch"] >= 1


def test_a_stalled_rank_is_named_and_stops_the_run(tmp_path, align):
    """SIGSTOP on rank 1: rank 0 says it is waiting, for whom, then stops the run."""
    import psutil

    cfg = config(tmp_path, align, "stall", max_epoch=50, dist_timeout_s=6)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "train.py", "--cfg-path", str(cfg)]  # fmt: skip
    log = tmp_path / "stall.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ, OMP_NUM_THREADS="1"))  # fmt: skip
    stopped = None
    try:
        deadline = time.monotonic() + 300
        while "Train: data epoch: [1]" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        workers = psutil.Process(proc.pid).children()
        stopped = next(w for w in workers if w.environ().get("RANK") == "1")
        stopped.suspend()
        while "waited 6 s at epoch" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
    finally:
        if stopped is not None and stopped.is_running():
            stopped.kill()
        proc.wait(timeout=120)
    text = log.read_text()
    assert proc.returncode != 0
    assert "rank 0 has waited" in text and "for rank 1 (silent for over" in text, text
    assert "rank 0 waited 6 s at epoch" in text and "for rank 1 (silent" in text
