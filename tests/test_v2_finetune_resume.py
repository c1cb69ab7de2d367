"""Exact resume of the MiniGPT-v2 finetune mix: a run of the shipped config stopped after epoch
0 and resumed from checkpoint_0.pth ends with the weights and optimizer state of an
uninterrupted run (the 22 datasets' positions and the mix's draws are in the checkpoint)."""

import sys
from pathlib import Path

import torch

import train
from tests.model_fixtures import load_v2_reference, v2_options

sys.path.insert(0, str(Path(__file__).parent))
import v2_data_formats

CONFIG = Path(__file__).resolve().parents[1] / "train_configs" / "minigptv2_finetune.yaml"
ITERS = 12  # per epoch


def run(options, output_dir, *extra):
    opts = options + [f"run.output_dir={output_dir}", *extra]
    train.main(["--cfg-path", str(CONFIG), "--options", *opts])
    (job,) = Path(output_dir).iterdir()
    return job


def test_resume_after_epoch_0_matches_uninterrupted_run(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    info = v2_data_formats.write_all(tmp_path / "data", count=6)
    options = v2_options(load_v2_reference()["tiny_hparams"]) + v2_data_formats.config_options(info)
    options += ["run.device=cpu", "run.max_epoch=2", f"run.iters_per_epoch={ITERS}",
                "run.num_workers=0", "run.amp=False", "run.wandb_log=False",
                "run.warmup_steps=2", "run.distributed=False"]  # fmt: skip
    full = run(options, tmp_path / "full")
    caplog.clear()
    resumed = run(options, tmp_path / "resumed",
                  f"run.resume_ckpt_path={full / 'checkpoint_0.pth'}")  # fmt: skip
    assert f"Resume checkpoint from {full / 'checkpoint_0.pth'}" in caplog.messages
    assert not any("differ from an uninterrupted run" in m for m in caplog.messages)

    a = torch.load(full / "checkpoint_1.pth", weights_only=True)
    b = torch.load(resumed / "checkpoint_1.pth", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    assert any("lora_A" in k for k in a["model"]) and "llama_proj.weight" in a["model"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for index, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][index][name]), (index, name)
