"""Weight, checkpoint and output files that are wrong in ways a user meets: each is an error
naming the file and what to do, before any work where the file allows (issue: hardening)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

import train
from minigpt4.common.checkpoint_files import CheckpointError, atomic_torch_save
from minigpt4.common.registry import registry
from minigpt4.models.weights import MissingWeightsError, load_state_dict_file
from tests.model_fixtures import TINY_DIR, tiny_model_config
from tests.train_helpers import write_align_folder, write_stage2_config


def load(section) -> None:
    registry.get_model_class("mini_gpt4").from_config(section)


def test_a_named_pipe_as_the_checkpoint_says_so(tmp_path):
    os.mkfifo(tmp_path / "ckpt.pth")
    with pytest.raises(MissingWeightsError, match=r"ckpt\.pth is a named pipe \(FIFO\), not a"):
        load(tiny_model_config(stage=2, ckpt=str(tmp_path / "ckpt.pth")))


def test_a_safetensors_checkpoint_whose_header_cannot_be_right(tmp_path):
    path = tmp_path / "proj.safetensors"
    path.write_bytes((10**12).to_bytes(8, "little") + b'{"a": 1}')
    with pytest.raises(CheckpointError, match=r"proj\.safetensors \(model\.ckpt\): a safetensors"):
        load_state_dict_file(str(path), "model.ckpt")
    path.write_bytes(b"\x02\x00")  # a .safetensors file too short to be one
    with pytest.raises(CheckpointError, match="too short"):
        load_state_dict_file(str(path), "model.ckpt")


@pytest.mark.parametrize("kind", ["a link to a text file", "a lying header"])
def test_an_llm_whose_weight_file_is_wrong_names_the_folder(tmp_path, kind):
    llm = tmp_path / "llama"
    shutil.copytree(TINY_DIR / "llama", llm)
    weights = next(p for p in llm.iterdir() if p.suffix in (".safetensors", ".bin"))
    weights.unlink()
    target = llm / "model.safetensors"
    if kind == "a link to a text file":
        (tmp_path / "notes.txt").write_text("these are not weights\n" * 10)
        target.symlink_to(tmp_path / "notes.txt")
    else:
        target.write_bytes((64).to_bytes(8, "little") + b'{"x": {"dtype": "F32", "shape": [9]')
    with pytest.raises(CheckpointError, match=rf"{llm}.* \(model.llama_model\): (its|this) weight"):
        load(tiny_model_config(stage=2, llama_model=str(llm)))


def test_a_full_disk_names_the_file_and_the_free_space(tmp_path, monkeypatch):
    def full(obj, path):
        raise RuntimeError("[enforce fail at inline_container.cc] . basic_ios::clear")

    monkeypatch.setattr(torch, "save", full)
    path = tmp_path / "checkpoint_0.pth"
    path.write_bytes(b"the previous checkpoint")
    with pytest.raises(CheckpointError, match=r"checkpoint_0\.pth: could not be written .* free"):
        atomic_torch_save({"model": {}}, str(path))
    assert path.read_bytes() == b"the previous checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_0.pth"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A finished one-epoch run's checkpoint, and the align folder it trained on."""
    root = tmp_path_factory.mktemp("trained")
    align = write_align_folder(root / "align", n=4)
    cfg = write_stage2_config(root / "s2.yaml", align, root / "out", max_epoch=1)
    train.main(["--cfg-path", str(cfg)])
    (job,) = [p for p in (root / "out").iterdir() if p.is_dir()]
    return job / "checkpoint_0.pth", align


def resume_from(tmp_path: Path, align: Path, state: dict) -> None:
    torch.save(state, tmp_path / "resume.pth")
    cfg = write_stage2_config(tmp_path / "r.yaml", align, tmp_path / "out", max_epoch=3,
                              resume_ckpt_path=str(tmp_path / "resume.pth"))  # fmt: skip
    train.main(["--cfg-path", str(cfg)])


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ("llama_proj of another size", "does not fit this model: Error(s) in loading"),
        ("optimizer state of another shape", "its optimizer state does not fit"),
        ("train_state that is no position", "its position (epoch, train_state) is not one"),
        ("an iteration past the epoch", "continues at iteration 99 of an epoch"),
    ],
)
def test_a_resume_checkpoint_that_does_not_fit(tmp_path, trained, change, words):
    good, align = trained
    state = torch.load(good, weights_only=True)
    if change == "llama_proj of another size":
        state["model"]["llama_proj.weight"] = torch.zeros(64, 7)
    elif change == "optimizer state of another shape":
        first = next(iter(state["optimizer"]["state"].values()))
        first["exp_avg"] = torch.zeros(3, 3)
    elif change == "train_state that is no position":
        state["train_state"]["next_epoch"] = -4
    else:
        state["train_state"]["next_iter"] = 99
    with pytest.raises(CheckpointError, match=str(tmp_path / "resume.pth")) as error:
        resume_from(tmp_path, align, state)
    assert words in str(error.value)


def test_inference_prompt_with_the_image_placeholder_is_a_usage_error(capsys):
    from minigpt4 import inference

    with pytest.raises(SystemExit):
        inference.parse_args(["--cfg-path", "x", "--images", "y", "--out", "z",
                              "--prompt", "Describe <ImageHere>."])  # fmt: skip
    assert "--prompt holds <ImageHere>" in capsys.readouterr().err
