"""Result files: only regular files, one run at a time, and a resumed evaluation only of the
same model, by content (issue: nothing silently wrong)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
from pathlib import Path

import pytest

from minigpt4.common.output_files import OutputError, OutputLock, check_output_path
from minigpt4.evaluation import run as eval_run
from minigpt4.evaluation.identity import content_hash
from minigpt4.evaluation.resume import AnswerLog, partial_path

TINY_EVAL = "eval_configs/minigpt4_tiny_eval.yaml"
CHECKPOINT = Path("tiny_world/checkpoint/pretrained_minigpt4_tiny.pth")


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda tmp: tmp, "is a folder, not a file; e.g."),
        (lambda tmp: Path("/dev/null"), "is a character device, not a file"),
        (lambda tmp: (os.mkfifo(tmp / "fifo"), tmp / "fifo")[1], "is a named pipe (FIFO)"),
        (lambda tmp: ((tmp / "f").write_text(""), tmp / "f" / "out.json")[1], "is a file, not"),
    ],
)
def test_only_regular_files_are_written(tmp_path, make, words):
    with pytest.raises(OutputError, match=re.escape(words)):
        check_output_path(make(tmp_path))
    assert check_output_path(tmp_path / "new" / "out.json").parent.is_dir()


def test_one_run_at_a_time_per_output(tmp_path):
    out = tmp_path / "answers.jsonl"
    with OutputLock(out):
        with pytest.raises(OutputError, match=rf"another run \(process {os.getpid()}\)"):
            OutputLock(out).__enter__()
    with OutputLock(out):  # released and removed: the next run takes it
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def evaluate_args(tmp_path: Path, out: Path, *options: str) -> argparse.Namespace:
    return argparse.Namespace(
        benchmark="pope", data=str(tmp_path), image_dir=None, limit=None, out=str(out),
        cfg_path=TINY_EVAL, options=list(options), question_template="{question}",
        max_new_tokens=8, max_length=2000, num_beams=1, do_sample=False, temperature=1.0,
        top_p=0.9, seed=0, batch_size=4, device="cpu", gpu_id=0, no_progress=True,
    )  # fmt: skip


def test_evaluation_checks_out_and_its_lock_before_reading_anything(tmp_path, monkeypatch):
    def no_reading(*_args):
        raise AssertionError("the benchmark was read before --out was checked")

    pope = dataclasses.replace(eval_run.BENCHMARKS["pope"], read=no_reading)
    monkeypatch.setitem(eval_run.BENCHMARKS, "pope", pope)
    with pytest.raises(OutputError, match="is a folder"):
        eval_run.evaluate(evaluate_args(tmp_path, tmp_path))
    out = tmp_path / "results.json"
    with OutputLock(out), pytest.raises(OutputError, match="another run"):
        eval_run.evaluate(evaluate_args(tmp_path, out))


def test_a_replaced_checkpoint_is_not_resumed_as_the_same_run(tmp_path):
    """Same path, other content: the partial answers are refused. Same content elsewhere: the
    same run."""
    ckpt = tmp_path / "model.pth"
    shutil.copy(CHECKPOINT, ckpt)
    args = evaluate_args(tmp_path, tmp_path / "r.json", f"model.ckpt={ckpt}")
    header = eval_run.run_header(args, eval_run.load_config(TINY_EVAL, args.options))
    AnswerLog(partial_path(tmp_path / "r.json"), header).add(["q1"], ["yes"])

    moved = tmp_path / "elsewhere.pth"
    shutil.copy(ckpt, moved)
    moved_args = evaluate_args(tmp_path, tmp_path / "r.json", f"model.ckpt={moved}")
    same = eval_run.run_header(moved_args, eval_run.load_config(TINY_EVAL, moved_args.options))
    assert same == header

    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF  # another model at the same path
    ckpt.write_bytes(bytes(data))
    changed = eval_run.run_header(args, eval_run.load_config(TINY_EVAL, args.options))
    assert changed["weights"]["model.ckpt"] != header["weights"]["model.ckpt"]
    with pytest.raises(ValueError, match=r"different run \(differs in: weights\)"):
        AnswerLog(partial_path(tmp_path / "r.json"), changed)


def test_content_hash_of_folders_covers_names_and_bytes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_bytes(b"1")
    first = content_hash(str(tmp_path / "a"))
    (tmp_path / "a" / "x").rename(tmp_path / "a" / "y")
    assert content_hash(str(tmp_path / "a")) != first


def test_two_inference_runs_cannot_share_an_output(tmp_path, monkeypatch):
    """The second run stops at once (before loading anything); the first one's file is its."""
    from minigpt4 import inference
    from minigpt4.conversation import loading

    def no_model(*_args, **_kwargs):
        raise AssertionError("the model was loaded although --out is taken")

    monkeypatch.setattr(loading, "build_model_and_processor", no_model)
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    out = tmp_path / "answers.jsonl"
    argv = ["--cfg-path", TINY_EVAL, "--images", str(image), "--out", str(out), "--device", "cpu"]
    with OutputLock(out), pytest.raises(OutputError, match="another run"):
        inference.main(argv)
    with pytest.raises(OutputError, match="is a character device"):
        inference.main([*argv[:-4], "--out", "/dev/null", "--device", "cpu"])
