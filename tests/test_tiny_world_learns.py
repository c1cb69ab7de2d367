"""The tiny world's claim: training only ``llama_proj`` makes the model describe unseen images.

Stage 1 runs with the normal ``train.py`` under ``torchrun --nproc_per_node 2`` on freshly
generated shards, from the frozen parts shipped in ``tiny_world/checkpoint/`` and a
freshly initialised ``llama_proj``, then stage 2 from its checkpoint on a fresh ``cc_sbu_align``
folder with yes/no pairs; each result is scored on 200 images of a seed that no training step
uses, through the demo's conversation flow, and on the tiny MME benchmark of that seed.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minigpt4.evaluate import main as evaluate_main
from minigpt4.models.weights import load_minigpt4_checkpoint
from tiny_world import evaluate

REPO_ROOT = Path(__file__).resolve().parents[1]
EVAL_CONFIG = "eval_configs/minigpt4_tiny_eval.yaml"
STAGE1_CONFIG = "train_configs/minigpt4_tiny_stage1.yaml"
STAGE1_SEED = 1  # the seed of the documented stage-1 shards; evaluate.HELD_OUT_SEED differs
STAGE1_COUNT = 4000  # the counts and seeds of the documented (styled) data
STAGE2_CONFIG = "train_configs/minigpt4_tiny_stage2.yaml"
STAGE2_SEED = 2
STAGE2_COUNT = 800
# The shipped recipe runs stage 2 for longer (train_configs/minigpt4_tiny_stage2.yaml), which
# lifts the drawn set's position from 0.83 to 0.945; the targets checked here hold at 300
# (seed 7777: 0.975 after 300 iterations, 0.995 after 2400).
STAGE2_ITERS = 300
# The target, held by the shipped model (docs/tiny-world.md: 0.995 on 200 held-out images) and
# by a fresh run of both stages; chance is 0.04.
TARGET = 0.9
COLOUR_MIN = 0.9
# Lower bounds after stage 1 alone (docs/tiny-world.md: 0.940, colour 1.000; 0.67 and 0.80 with
# the first, description-only LLM).
STAGE1_MIN = 0.5
STAGE1_COLOUR_MIN = 0.7


def _make_synthetic():
    path = REPO_ROOT / "dataset" / "make_synthetic.py"
    spec = importlib.util.spec_from_file_location("make_synthetic_for_tiny_world", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def shipped_chat():
    torch.manual_seed(0)
    return evaluate.build_chat(EVAL_CONFIG)


def test_held_out_seed_is_not_a_training_seed():
    assert evaluate.HELD_OUT_SEED != STAGE1_SEED
    text = (REPO_ROOT / "docs" / "tiny-world.md").read_text()
    assert f"--seed {evaluate.HELD_OUT_SEED}" not in text.split("## Evaluation")[0]


def test_shipped_model_describes_unseen_images(shipped_chat):
    result = evaluate.evaluate_chat(shipped_chat, evaluate.HELD_OUT_SEED, 50)
    assert result.accuracy >= TARGET, result.answers[:5]
    assert result.colour_accuracy >= COLOUR_MIN
    # A description in the world's language, not a bare "red circle".
    assert all(len(r["answer"].split()) >= 5 for r in result.answers)


def test_untrained_projection_is_near_chance():
    torch.manual_seed(0)
    chat = evaluate.build_chat(EVAL_CONFIG, untrained=True)
    result = evaluate.evaluate_chat(chat, evaluate.HELD_OUT_SEED, 50)
    # 24 colour x shape combinations: chance is ~4 %.
    assert result.accuracy <= 0.2, result.answers[:5]


def _torchrun(cfg_path: str, options: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["train.py", "--cfg-path", cfg_path, "--options", *options]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _mme_scores(data: Path, ckpt: str, out: Path) -> dict:
    argv = ["--cfg-path", EVAL_CONFIG, "--benchmark", "mme", "--data", str(data), "--out", str(out)]
    argv += ["--device", "cpu", "--no-progress", "--options", f"model.ckpt={ckpt}"]
    return evaluate_main(argv)["scores"]


def _checkpoint(out: Path) -> str:
    ckpts = glob.glob(str(out / "*" / "checkpoint_0.pth"))
    assert len(ckpts) == 1, os.listdir(out)
    return ckpts[0]


@pytest.mark.slow
def test_stages_with_torchrun_learn_from_a_fresh_projection(tmp_path):
    """Stage 1 from the shipped frozen parts and a fresh llama_proj, then stage 2 from it."""
    make_synthetic = _make_synthetic()
    shards = tmp_path / "shards"
    tars = make_synthetic.write_webdataset(
        str(shards),
        seed=STAGE1_SEED,
        count=STAGE1_COUNT,
        shard_size=STAGE1_COUNT // 4,
        styled=True,
    )
    assert len(tars) == 4
    # Stage 1 starts from nn.Linear's random init: the config names no checkpoint.
    assert "ckpt" not in (REPO_ROOT / STAGE1_CONFIG).read_text().split("datasets:")[0]
    _torchrun(
        STAGE1_CONFIG,
        [
            f"datasets.laion.build_info.storage={shards}/{{00000..00003}}.tar",
            f"run.output_dir={tmp_path / 'stage1'}",
        ],
    )
    stage1 = _checkpoint(tmp_path / "stage1")
    torch.manual_seed(0)
    chat = evaluate.build_chat(EVAL_CONFIG, [f"model.ckpt={stage1}"])
    result1 = evaluate.evaluate_chat(chat, evaluate.HELD_OUT_SEED, 200)
    assert result1.colour_accuracy >= STAGE1_COLOUR_MIN, (
        result1.colour_accuracy,
        result1.answers[:5],
    )
    assert result1.accuracy >= STAGE1_MIN, (result1.accuracy, result1.answers[:5])

    align = tmp_path / "align"
    make_synthetic.write_align(
        str(align), seed=STAGE2_SEED, count=STAGE2_COUNT, yes_no_pairs=1, styled=True
    )
    _torchrun(
        STAGE2_CONFIG,
        [
            f"model.ckpt={stage1}",
            f"datasets.cc_sbu_align.build_info.storage={align}",
            f"run.output_dir={tmp_path / 'stage2'}",
            f"run.iters_per_epoch={STAGE2_ITERS}",
        ],
    )
    load_minigpt4_checkpoint(chat.model, _checkpoint(tmp_path / "stage2"))
    result2 = evaluate.evaluate_chat(chat, evaluate.HELD_OUT_SEED, 200)
    assert result2.accuracy >= TARGET, (result2.accuracy, result2.answers[:5])
    assert result2.colour_accuracy >= COLOUR_MIN, (result2.colour_accuracy, result2.answers[:5])
    mme_data = tmp_path / "mme"
    make_synthetic.write_mme(str(mme_data), evaluate.HELD_OUT_SEED, 20)
    mme1 = _mme_scores(mme_data, stage1, tmp_path / "mme1.json")
    mme2 = _mme_scores(mme_data, _checkpoint(tmp_path / "stage2"), tmp_path / "mme2.json")
    assert mme2["acc"] >= evaluate.MME_ACC_TARGET, mme2
    assert mme2["acc_plus"] >= evaluate.MME_ACC_PLUS_TARGET, mme2
    assert mme2["acc_plus"] > mme1["acc_plus"], (mme1, mme2)
