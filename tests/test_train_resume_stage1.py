"""Stage 1 (webdataset streams) killed and resumed ends exactly where an uninterrupted run ends.

``torchrun --standalone --nproc_per_node 2`` on CPU (gloo) over two generated webdataset datasets
mixed by sample ratio (one corrupt sample among them), 2 epochs of 5 iterations, a periodic
checkpoint every 3 iterations. The interrupted run is killed (SIGKILL, every rank) right after
the checkpoint of epoch 0, iteration 3 is written (an odd number of batches, so with 2 workers
the resumed loader must start with the second worker); the resumed run starts from that
``checkpoint_latest.pth``. Final weights, optimizer state and every epoch's averaged stats must
be bit-identical to the uninterrupted run's, with ``num_workers`` 0 and 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.train_helpers import write_shards, write_stage1_config

REPO = Path(__file__).resolve().parents[1]
TORCHRUN_TIMEOUT_S = 600
KILL_AT = (0, 2)  # (epoch, i): after the optimizer step of the 3rd iteration of epoch 0

# train.main as train.py runs it; with KILL_AT set, every rank kills itself (SIGKILL) once the
# periodic checkpoint after that iteration is on disk (test hook only).
RANK_WRAPPER = """
import os, signal, sys
sys.path.insert(0, {repo!r})
import torch.distributed as dist
import train
from minigpt4.runners.checkpointer import Checkpointer

kill_at = os.environ.get("KILL_AT")
if kill_at:
    target = tuple(int(x) for x in kill_at.split(","))
    save = Checkpointer.save_periodic

    def save_then_die(self, epoch, i, meters=None):
        save(self, epoch, i, meters)
        if (epoch, i) == target:
            dist.barrier()  # rank 0 has written the file
            os.kill(os.getpid(), signal.SIGKILL)

    Checkpointer.save_periodic = save_then_die
train.main(sys.argv[1:])
"""


def torchrun(root: Path, cfg: Path, out: str, kill_at=None, **options) -> tuple[int, str]:
    wrapper = root / "run_train.py"
    wrapper.write_text(RANK_WRAPPER.format(repo=str(REPO)))
    opts = [f"run.output_dir={out}"] + [f"run.{k}={v}" for k, v in options.items()]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(wrapper), "--cfg-path", str(cfg), "--options", *opts]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if kill_at:
        env["KILL_AT"] = ",".join(map(str, kill_at))
    result = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True,
                            timeout=TORCHRUN_TIMEOUT_S)  # fmt: skip
    return result.returncode, result.stdout + result.stderr


def only_job(folder: Path) -> Path:
    (job,) = list(folder.iterdir())
    return job


def epoch_stats(job: Path) -> list[dict]:
    lines = (job / "log.txt").read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith('{"train_')]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage1_resume")
    laion = write_shards(root / "laion", n_shards=2, per_shard=6, seed=1, corrupt=((1, 3),))
    cc_sbu = write_shards(root / "cc_sbu", n_shards=2, per_shard=6, seed=2)
    cfg = write_stage1_config(root / "stage1.yaml", laion, cc_sbu, Path("unused"),
                              max_epoch=2, iters_per_epoch=5, save_freq_iters=3)  # fmt: skip
    return root, cfg


@pytest.mark.slow
@pytest.mark.parametrize("num_workers", [0, 2])
def test_killed_stage1_run_resumes_bit_identically(data, num_workers):
    root, cfg = data
    tag = f"w{num_workers}"
    code, full_out = torchrun(root, cfg, f"{tag}/full", num_workers=num_workers)
    assert code == 0, full_out[-6000:]
    full = only_job(root / tag / "full")

    code, killed_out = torchrun(root, cfg, f"{tag}/killed", kill_at=KILL_AT,
                                num_workers=num_workers)  # fmt: skip
    assert code != 0 and "Training time" not in killed_out, killed_out[-4000:]
    latest = only_job(root / tag / "killed") / "checkpoint_latest.pth"
    state = torch.load(latest, weights_only=True)
    assert state["train_state"]["next_epoch"] == 0 and state["train_state"]["next_iter"] == 3
    for rank_state in state["rank_states"]:  # both ranks' stream positions and running stats
        laion, cc_sbu = rank_state["loaders"]
        assert laion["epoch"] == 0 and len(laion["positions"]) == max(1, num_workers)
        assert sum(laion["positions"]) > 0
        assert rank_state["meters"]["loss"]["count"] == 3
    if num_workers:  # the case where the restarted workers must swap roles
        assert any(r["loaders"][0]["next_worker"] == 1 for r in state["rank_states"])

    code, resumed_out = torchrun(root, cfg, f"{tag}/resumed", num_workers=num_workers,
                                 resume_ckpt_path=str(latest))  # fmt: skip
    assert code == 0, resumed_out[-6000:]
    assert f"Resume checkpoint from {latest}" in resumed_out
    assert "cannot be exact" not in resumed_out
    assert "Train: data epoch: [0]  [3/5]" in resumed_out  # continued mid-epoch
    assert "Train: data epoch: [0]  [2/5]" not in resumed_out
    resumed = only_job(root / tag / "resumed")

    a = torch.load(full / "checkpoint_1.pth", weights_only=True)
    b = torch.load(resumed / "checkpoint_1.pth", weights_only=True)
    for key in ("llama_proj.weight", "llama_proj.bias"):
        assert torch.equal(a["model"][key], b["model"][key]), key
    for index, param_state in a["optimizer"]["state"].items():
        for name, value in param_state.items():
            assert torch.equal(value, b["optimizer"]["state"][index][name]), (index, name)
    # the resumed epoch's averaged stats cover the whole epoch, as the uninterrupted run's
    assert epoch_stats(resumed) == epoch_stats(full)
    assert len(epoch_stats(full)) == 2
    # and training happened: epoch 1 moved the weights
    c = torch.load(full / "checkpoint_0.pth", weights_only=True)
    assert not torch.equal(c["model"]["llama_proj.weight"], a["model"]["llama_proj.weight"])
