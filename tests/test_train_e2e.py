"""End to end on CPU with the real (tiny reference) MiniGPT-4 and generated data.

Stage 1: ``torchrun --standalone --nproc_per_node 2`` over two webdataset datasets mixed by
sample ratio (one corrupt sample among them), 2 epochs of 2 iterations. Stage 2: one process on
a ``cc_sbu_align`` folder, starting from the stage-1 checkpoint.
"""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import minigpt4  # noqa: F401
from minigpt4.models.mini_gpt4 import MiniGPT4
from tests.train_helpers import (
    write_align_folder,
    write_shards,
    write_stage1_config,
    write_stage2_config,
)

REPO = Path(__file__).resolve().parents[1]
TORCHRUN_TIMEOUT_S = 600

# Runs train.main exactly as `train.py` does, then (test only) saves each rank's weights.
RANK_WRAPPER = """
import os, sys, torch
sys.path.insert(0, {repo!r})
import train
runner = train.main(sys.argv[1:])
model = runner.unwrap_dist_model(runner.model)
torch.save(model.state_dict(), os.path.join({rank_dir!r}, "rank%s.pt" % os.environ["RANK"]))
"""


def fresh_model(model_cfg, seed=42):
    """The model as train.py builds it on rank 0 (seeded with run.seed + 0)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return MiniGPT4.from_config(model_cfg)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage1")
    laion = write_shards(root / "data" / "laion", n_shards=2, per_shard=6, seed=1,
                         corrupt=((1, 3),))  # fmt: skip
    cc_sbu = write_shards(root / "data" / "cc_sbu", n_shards=2, per_shard=6, seed=2)
    cfg = write_stage1_config(root / "stage1.yaml", laion, cc_sbu, Path("output/stage1"),
                              iters_per_epoch=2, device="cuda")  # fmt: skip
    rank_dir = root / "ranks"
    rank_dir.mkdir()
    wrapper = root / "run_train.py"
    wrapper.write_text(RANK_WRAPPER.format(repo=str(REPO), rank_dir=str(rank_dir)))
    work = root / "work"  # the user's current directory
    work.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(wrapper), "--cfg-path", str(cfg), "--options", "run.device=cpu"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True,
                            timeout=TORCHRUN_TIMEOUT_S)  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    job_dirs = list((work / "output" / "stage1").iterdir())
    return {"root": root, "work": work, "output": output, "cfg": cfg, "rank_dir": rank_dir,
            "job_dirs": job_dirs}  # fmt: skip


@pytest.mark.slow
def test_stage1_ddp_run_writes_the_originals_outputs(stage1):
    output = stage1["output"]
    assert "distributed init (rank 0, world 2)" in output
    assert "distributed init (rank 1, world 2)" in output
    # only rank 0 logs INFO: one progress line per iteration, one of each summary
    assert output.count("Train: data epoch: [0]  [0/2]") == 1
    assert output.count("Train: data epoch: [1]  [1/2]") == 1
    assert output.count("Running Parameters") == 1
    assert "Start training epoch 1, 2 iters per inner epoch." in output
    assert "Loaded the train split: webdataset streams of laion, cc_sbu (a stream has no" in output
    # the corrupt sample is skipped with a warning (by whichever rank met it), not a crash
    assert "skipping a sample that cannot be read" not in output or "key=000010003" in output

    # only rank 0 writes, in output_dir/<job_id> relative to the current directory
    assert sorted(p.name for p in stage1["work"].iterdir()) == ["output"]
    (job,) = stage1["job_dirs"]
    assert len(job.name) == 11 and job.name.isdigit()
    assert sorted(p.name for p in job.iterdir()) == [
        "checkpoint_0.pth", "checkpoint_1.pth", "config.yaml", "log.txt", "result"]  # fmt: skip
    assert f"Saving checkpoint at epoch 1 to {job / 'checkpoint_1.pth'}." in output

    log_lines = (job / "log.txt").read_text().splitlines()
    stats = [json.loads(line) for line in log_lines[-2:]]
    assert [set(s) for s in stats] == [{"train_lr", "train_loss"}] * 2
    config = json.loads("\n".join(log_lines[:-2]))
    assert config["run"]["world_size"] == 2 and config["run"]["distributed"] is True
    assert config["run"]["device"] == "cpu"
    assert set(config) == {"run", "model", "preprocess", "datasets"}
    assert OmegaConf.load(job / "config.yaml").datasets.laion.sample_ratio == 115


@pytest.mark.slow
def test_stage1_checkpoints_train_llama_proj_only_identically_on_all_ranks(stage1):
    (job,) = stage1["job_dirs"]
    ckpts = [torch.load(job / f"checkpoint_{e}.pth", weights_only=True) for e in (0, 1)]
    for epoch, ckpt in enumerate(ckpts):
        assert {"model", "optimizer", "config", "scaler", "epoch"} <= set(ckpt)
        assert ckpt["epoch"] == epoch
        assert {k for k in ckpt["model"] if not k.endswith(("position_ids", "inv_freq"))} == {
            "llama_proj.weight", "llama_proj.bias"}  # fmt: skip
    assert not torch.equal(ckpts[0]["model"]["llama_proj.weight"],
                           ckpts[1]["model"]["llama_proj.weight"])  # fmt: skip

    ranks = [torch.load(stage1["rank_dir"] / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert set(ranks[0]) == set(ranks[1])
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key

    model_cfg = OmegaConf.create(ckpts[1]["config"]).model
    initial = fresh_model(model_cfg).state_dict()
    for key, value in initial.items():
        if key.startswith("llama_proj."):
            assert not torch.equal(value, ranks[0][key])  # trained
            assert torch.equal(ranks[0][key], ckpts[1]["model"][key])
        else:
            assert torch.equal(value, ranks[0][key]), f"frozen {key} changed"


@pytest.mark.slow
def test_stage2_starts_from_the_stage1_checkpoint(stage1, tmp_path, monkeypatch, caplog):
    import train

    (job,) = stage1["job_dirs"]
    stage1_ckpt = job / "checkpoint_1.pth"
    align = write_align_folder(tmp_path / "cc_sbu_align", n=6)
    cfg = write_stage2_config(tmp_path / "stage2.yaml", align, Path("output/stage2"),
                              ckpt=str(stage1_ckpt), max_epoch=1, iters_per_epoch=2)  # fmt: skip
    monkeypatch.chdir(tmp_path)
    runner = train.main(["--cfg-path", str(cfg), "--options", "run.device=cpu"])
    assert f"Load BLIP2-LLM Checkpoint: {stage1_ckpt}" in caplog.messages

    # the model built from the stage-2 config starts at the stage-1 weights
    loaded = fresh_model(runner.config.model_cfg).state_dict()
    stage1_weights = torch.load(stage1_ckpt, weights_only=True)["model"]
    for key in ("llama_proj.weight", "llama_proj.bias"):
        assert torch.equal(loaded[key], stage1_weights[key])
    trained = runner.unwrap_dist_model(runner.model).state_dict()
    assert not torch.equal(trained["llama_proj.weight"], stage1_weights["llama_proj.weight"])
    for key, value in loaded.items():
        if not key.startswith("llama_proj."):
            assert torch.equal(value, trained[key]), f"frozen {key} changed"

    (job2,) = list((tmp_path / "output" / "stage2").iterdir())
    ckpt = torch.load(job2 / "checkpoint_0.pth", weights_only=True)
    assert ckpt["config"]["model"]["ckpt"] == str(stage1_ckpt)
    assert ckpt["config"]["model"]["end_sym"] == "###"
