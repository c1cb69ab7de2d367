"""Every YAML the repository ships loads through Config; the entry points answer --help."""

import subprocess
import sys
import types
from pathlib import Path

import pytest

import minigpt4  # noqa: F401  (registers models and builders)
from minigpt4.common.config import Config

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(
    str(p.relative_to(REPO))
    for d in ("train_configs", "eval_configs")
    for p in (REPO / d).glob("*.yaml")
)


def test_original_configs_are_shipped():
    for name in (
        "train_configs/minigpt4_stage1_pretrain.yaml",
        "train_configs/minigpt4_stage2_finetune.yaml",
        "eval_configs/minigpt4_eval.yaml",
    ):
        assert name in SHIPPED


@pytest.mark.parametrize("cfg_path", SHIPPED)
def test_shipped_config_loads(cfg_path, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("MINIGPT4_DATASET", "/data")
    cfg = Config(types.SimpleNamespace(cfg_path=cfg_path, options=None))
    assert cfg.model_cfg.arch == "mini_gpt4"
    assert cfg.run_cfg.task == "image_text_pretrain"
    assert len(cfg.datasets_cfg) >= 1


def test_original_stage1_values():
    cfg = Config(
        types.SimpleNamespace(
            cfg_path=str(REPO / "train_configs/minigpt4_stage1_pretrain.yaml"), options=None
        )
    )
    run = cfg.run_cfg
    assert (run.init_lr, run.min_lr, run.warmup_lr) == (1e-4, 8e-5, 1e-6)
    assert (run.max_epoch, run.iters_per_epoch, run.warmup_steps) == (4, 5000, 5000)
    assert (run.batch_size_train, run.seed, run.weight_decay) == (64, 42, 0.05)
    assert cfg.datasets_cfg.laion.sample_ratio == 115 and cfg.datasets_cfg.cc_sbu.sample_ratio == 14
    assert cfg.model_cfg.num_query_token == 32 and cfg.model_cfg.vit_precision == "fp16"


@pytest.mark.parametrize("script", ["train.py", "demo.py"])
def test_entry_point_help(script):
    result = subprocess.run(
        [sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "--cfg-path" in result.stdout and "--options" in result.stdout
