"""Resume with the real tiny MiniGPT-4: a run stopped after epoch 0 and resumed ends with the
same epoch-1 weights and optimizer state as an uninterrupted run (one process, map-style data)."""

from pathlib import Path

import torch

import train
from tests.train_helpers import write_align_folder, write_stage2_config


def only_job(folder: Path) -> Path:
    (job,) = list(folder.iterdir())
    return job


def test_resume_after_epoch_0_matches_uninterrupted_run(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    align = write_align_folder(tmp_path / "cc_sbu_align", n=5)  # 2 batches/pass: passes wrap
    full_cfg = write_stage2_config(tmp_path / "full.yaml", align, Path("full"),
                                   max_epoch=2, iters_per_epoch=3)  # fmt: skip
    train.main(["--cfg-path", str(full_cfg)])
    full = only_job(tmp_path / "full")

    resume_cfg = write_stage2_config(tmp_path / "resume.yaml", align, Path("resumed"),
                                     max_epoch=2, iters_per_epoch=3,
                                     resume_ckpt_path=str(full / "checkpoint_0.pth"))  # fmt: skip
    caplog.clear()
    train.main(["--cfg-path", str(resume_cfg)])
    assert f"Resume checkpoint from {full / 'checkpoint_0.pth'}" in caplog.messages
    assert "Start training epoch 0, 3 iters per inner epoch." not in caplog.messages
    resumed = only_job(tmp_path / "resumed")
    assert not (resumed / "checkpoint_0.pth").exists()

    a = torch.load(full / "checkpoint_1.pth", weights_only=True)
    b = torch.load(resumed / "checkpoint_1.pth", weights_only=True)
    assert a["epoch"] == b["epoch"] == 1
    for key in ("llama_proj.weight", "llama_proj.bias"):
        assert torch.equal(a["model"][key], b["model"][key]), key
    for index, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][index][name]), (index, name)
    assert a["rank_states"][0]["loaders"] == b["rank_states"][0]["loaders"]
    # and epoch 1 really trained
    c = torch.load(full / "checkpoint_0.pth", weights_only=True)
    assert not torch.equal(c["model"]["llama_proj.weight"], a["model"]["llama_proj.weight"])
