"""Every YAML the repository ships loads through Config; the entry points answer --help."""

import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import minigpt4  # noqa: F401  (registers models and builders)
from minigpt4.common.config import Config
from minigpt4.common.config_error import ConfigError
from minigpt4.common.registry import RegistryError
from tests.model_fixtures import AWAITING

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
        "train_configs/minigpt4_llama2_stage1_pretrain.yaml",
        "train_configs/minigpt4_llama2_stage2_finetune.yaml",
        "eval_configs/minigpt4_llama2_eval.yaml",
    ):
        assert name in SHIPPED


@pytest.mark.parametrize("cfg_path", [p for p in SHIPPED if p not in AWAITING])
def test_shipped_config_loads(cfg_path, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("MINIGPT4_DATASET", "/data")
    cfg = Config(types.SimpleNamespace(cfg_path=cfg_path, options=None))
    assert (cfg.model_cfg.arch, cfg.model_cfg.model_type) in {
        ("mini_gpt4", "pretrain_vicuna"),
        ("minigpt4", "pretrain_llama2"),
        ("minigpt_v2", "pretrain"),
    }
    assert cfg.run_cfg.task == "image_text_pretrain"
    assert len(cfg.datasets_cfg) >= 1


@pytest.mark.parametrize(("cfg_path", "error"), sorted(AWAITING.items()))
def test_configs_awaiting_a_part_name_it(cfg_path, error, monkeypatch):
    monkeypatch.chdir(REPO)
    assert cfg_path in SHIPPED
    with pytest.raises((ConfigError, RegistryError), match=re.escape(error)):
        Config(types.SimpleNamespace(cfg_path=cfg_path, options=None))


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


def load(path: str) -> Config:
    return Config(types.SimpleNamespace(cfg_path=str(REPO / path), options=None))


def test_original_llama2_model_yaml():
    """minigpt4/configs/models/minigpt4_llama2.yaml: every key and value of the original's."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO / "minigpt4/configs/models/minigpt4_llama2.yaml")
    assert OmegaConf.to_container(cfg.model) == {
        "arch": "minigpt4",
        "image_size": 224,
        "drop_path_rate": 0,
        "use_grad_checkpoint": False,
        "vit_precision": "fp16",
        "freeze_vit": True,
        "has_qformer": False,
        "prompt": "",
        "llama_model": "please set this value to the path of llama2-chat-7b",
    }


def test_original_llama2_stage_values():
    stage1 = load("train_configs/minigpt4_llama2_stage1_pretrain.yaml")
    run = stage1.run_cfg
    assert (run.init_lr, run.min_lr, run.warmup_lr, run.weight_decay) == (1e-4, 8e-5, 1e-6, 0.05)
    assert (run.max_epoch, run.iters_per_epoch, run.warmup_steps) == (4, 5000, 5000)
    assert "batch_size_train" not in run and run.wandb_log is True
    for name, ratio in (("laion", 115), ("cc_sbu", 14)):
        block = stage1.datasets_cfg[name]
        assert (block.batch_size, block.sample_ratio) == (64, ratio)
    assert stage1.model_cfg.has_qformer is False and "prompt_path" not in stage1.model_cfg

    stage2 = load("train_configs/minigpt4_llama2_stage2_finetune.yaml")
    model, run = stage2.model_cfg, stage2.run_cfg
    assert (model.max_txt_len, model.end_sym) == (160, "</s>")
    assert (model.prompt_path, model.prompt_template) == (
        "prompts/alignment.txt",
        "[INST] {} [/INST] ",
    )
    assert stage2.datasets_cfg.cc_sbu_align.batch_size == 12
    assert (run.init_lr, run.min_lr, run.max_epoch, run.iters_per_epoch) == (3e-5, 1e-5, 5, 200)

    model = load("eval_configs/minigpt4_llama2_eval.yaml").model_cfg
    assert (model.low_resource, model.end_sym, model.max_txt_len) == (True, "</s>", 160)
    assert model.prompt_template == "[INST] {} [/INST] " and "prompt_path" not in model


@pytest.mark.parametrize("script", ["train.py", "demo.py"])
def test_entry_point_help(script):
    result = subprocess.run(
        [sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "--cfg-path" in result.stdout and "--options" in result.stdout


# The LLM families shipped as configs, with their real transformers config sizes (Hugging Face
# model cards): llama_proj must map into each one's hidden size.
FAMILY_LLMS = {
    "llama3": ("LlamaConfig", dict(hidden_size=4096, intermediate_size=14336,
               num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
               vocab_size=128256)),
    "qwen2_5": ("Qwen2Config", dict(hidden_size=3584, intermediate_size=18944,
                num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                vocab_size=152064)),
    "mistral": ("MistralConfig", dict(hidden_size=4096, intermediate_size=14336,
                num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                vocab_size=32768)),
}  # fmt: skip
FAMILY_CONFIGS = [
    (name, f"{kind}/minigpt4_{name}_{stage}.yaml")
    for name in FAMILY_LLMS
    for kind, stage in (
        ("train_configs", "stage1_pretrain"),
        ("train_configs", "stage2_finetune"),
        ("eval_configs", "eval"),
    )
]


@pytest.mark.parametrize(("name", "cfg_path"), FAMILY_CONFIGS)
def test_family_config_builds_a_model_of_the_llms_width(name, cfg_path, monkeypatch):
    """Each shipped family config is a valid MiniGPT4Config naming the tokenizer's own chat
    template, and a model built from it (on the meta device) projects into that LLM's width."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from minigpt4.common.registry import registry
    from minigpt4.models.model_config import MiniGPT4Config
    from minigpt4.models.model_section import complete_section

    monkeypatch.chdir(REPO)
    cfg = load(cfg_path)
    model_cls = registry.get_model_class(cfg.model_cfg.arch)
    config = MiniGPT4Config.from_cfg(complete_section(model_cls, cfg.model_cfg))
    assert (config.tokenizer, config.chat_template) == ("auto", "tokenizer")
    assert "/path/to/" in config.llama_model
    if "stage2" in cfg_path or "eval" in cfg_path:
        assert config.end_sym in config.stop_words or name == "mistral"
        assert "{}" in config.prompt_template and config.max_txt_len == 160
    class_name, sizes = FAMILY_LLMS[name]
    with torch.device("meta"):
        llm = AutoModelForCausalLM.from_config(getattr(transformers, class_name)(**sizes))
        model = model_cls(config, llm.config.hidden_size)
    assert model.llama_proj.out_features == sizes["hidden_size"]
    assert model.llama_proj.in_features == config.qformer_config.hidden_size
