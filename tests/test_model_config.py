"""The model's YAML, its registry entry, and building it through the shipped configs."""

from __future__ import annotations

import argparse
import logging
import os

import torch
from omegaconf import OmegaConf

from minigpt4.common.config import Config
from minigpt4.common.registry import registry
from minigpt4.models.mini_gpt4 import MiniGPT4
from tests.model_fixtures import (
    TINY_DIR,
    TINY_NUM_QUERY_TOKEN,
    TINY_QFORMER_CONFIG,
    TINY_VIT_CONFIG,
    load_reference,
    tiny_model_config,
)


def test_registered_and_default_config_is_the_originals():
    assert registry.get_model_class("mini_gpt4") is MiniGPT4
    path = MiniGPT4.default_config_path("pretrain_vicuna")
    assert os.path.isabs(path) and path.endswith(os.path.join("configs", "models", "minigpt4.yaml"))
    cfg = OmegaConf.load(path)
    # FACTS a: every key and value of the original file.
    assert OmegaConf.to_container(cfg.model) == {
        "arch": "mini_gpt4",
        "image_size": 224,
        "drop_path_rate": 0,
        "use_grad_checkpoint": False,
        "vit_precision": "fp16",
        "freeze_vit": True,
        "freeze_qformer": True,
        "num_query_token": 32,
        "llama_model": "/path/to/vicuna/weights/",
        "prompt": "",
    }
    assert OmegaConf.to_container(cfg.preprocess) == {
        "vis_processor": {
            "train": {"name": "blip2_image_train", "image_size": 224},
            "eval": {"name": "blip2_image_eval", "image_size": 224},
        },
        "text_processor": {"train": {"name": "blip_caption"}, "eval": {"name": "blip_caption"}},
    }


def _options(**extra):
    tiny = {
        "llama_model": TINY_DIR / "llama",
        "ckpt": TINY_DIR / "pretrained_minigpt4_tiny.pth",
        "vit_model_path": TINY_DIR / "eva_vit_g.pth",
        "q_former_model": TINY_DIR / "blip2_pretrained_flant5xxl.pth",
        "num_query_token": TINY_NUM_QUERY_TOKEN,
        "cpu_dtype": "fp32",  # exact, for the comparison with the original's fp32 numbers
        **extra,
    }
    opts = [f"model.{k}={v}" for k, v in tiny.items()]
    opts += [f"model.vit_config.{k}={v}" for k, v in TINY_VIT_CONFIG.items()]
    opts += [f"model.qformer_config.{k}={v}" for k, v in TINY_QFORMER_CONFIG.items()]
    return opts


def test_eval_config_with_options_builds_the_reference_model():
    """eval_configs/minigpt4_eval.yaml + --options, as a user points it at weights."""
    args = argparse.Namespace(
        cfg_path="eval_configs/minigpt4_eval.yaml", options=_options(low_resource=False)
    )
    cfg = Config(args)
    model = registry.get_model_class(cfg.model_cfg.arch).from_config(cfg.model_cfg)
    assert model.max_txt_len == 160 and model.end_sym == "###" and not model.low_resource
    assert len(model.prompt_list) == 4
    assert model.prompt_list[0].startswith("###Human: <Img><ImageHere></Img> Describe")
    ref = load_reference()
    with torch.no_grad():
        inputs_llama, _ = model.encode_img(ref["images_eval_processed"])
    assert (inputs_llama - ref["inputs_llama"]).abs().max() <= 1e-5


def test_stage1_train_config_defaults():
    args = argparse.Namespace(
        cfg_path="train_configs/minigpt4_stage1_pretrain.yaml", options=_options()
    )
    cfg = Config(args)
    model = MiniGPT4.from_config(cfg.model_cfg)
    # No prompt_path / end_sym / max_txt_len in the stage-1 config: the code defaults apply.
    assert model.prompt_list == [] and model.end_sym == "\n" and model.max_txt_len == 32


def test_misspelt_model_key_is_reported(caplog):
    with caplog.at_level(logging.WARNING):
        MiniGPT4.from_config(tiny_model_config(max_text_len=10))
    assert "model.max_text_len is not a MiniGPT-4 model key" in caplog.text
    assert "did you mean model.max_txt_len?" in caplog.text
