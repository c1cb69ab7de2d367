"""Run dtypes per device and config: bf16 weights by default on CPU, fp32 when asked (exact), the
original's fp16/autocast on CUDA, fp16 around an 8-bit LLM; and that the computation really
runs in those dtypes."""

from __future__ import annotations

import argparse
import logging

import pytest
import torch
from omegaconf import OmegaConf

from minigpt4.common.config import Config
from minigpt4.common.config_error import ConfigError
from minigpt4.models.mini_gpt4 import MiniGPT4
from minigpt4.models.model_config import MiniGPT4Config
from minigpt4.models.precision import Precision
from tests.model_fixtures import load_reference, tiny_model_config

BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32


@pytest.fixture(scope="module")
def ref():
    return load_reference()


def _config(**values) -> MiniGPT4Config:
    return MiniGPT4Config.from_cfg({"llama_model": "x", **values})


@pytest.mark.parametrize(
    "device, values, vision, half_vit, llm, autocast",
    [
        ("cpu", {}, BF16, False, BF16, None),
        ("cpu", {"cpu_dtype": "fp32"}, FP32, False, FP32, None),
        ("cpu", {"low_resource": True}, BF16, False, BF16, None),
        ("cpu", {"low_resource": True, "cpu_dtype": "fp32"}, FP32, False, FP32, None),
        ("cpu", {"llm_quantization": "4bit"}, BF16, False, BF16, None),
        ("cpu", {"autocast_dtype": "bf16", "cpu_dtype": "fp32"}, FP32, False, FP32, None),
        ("cuda", {}, FP32, True, FP16, FP16),
        ("cuda", {"autocast_dtype": "bf16", "vit_precision": "fp32"}, FP32, False, BF16, BF16),
        ("cuda", {"autocast_dtype": "bf16", "llm_quantization": "8bit"}, FP32, True, FP16, BF16),
    ],
)
def test_dtype_rules(device, values, vision, half_vit, llm, autocast):
    precision = Precision.of(_config(**values), device)
    assert (precision.vision, precision.vit_half_linear) == (vision, half_vit)
    assert (precision.llm, precision.autocast) == (llm, autocast)


def test_bad_cpu_dtype_is_a_clear_error():
    with pytest.raises(
        ConfigError, match="model.cpu_dtype must be one of auto, bf16, fp32; got 'fp16'"
    ):
        _config(cpu_dtype="fp16")


def test_shipped_eval_config_runs_bf16_on_cpu():
    cfg = Config(argparse.Namespace(cfg_path="eval_configs/minigpt4_eval.yaml", options=None))
    config = MiniGPT4Config.from_cfg({**OmegaConf.to_container(cfg.model_cfg), "device": "cpu"})
    assert config.cpu_dtype == "auto"  # bf16 weights, the products' dtype chosen per machine
    assert Precision.of(config, "cpu").vision == BF16


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_real_size_vision_side_is_allocated_in_the_run_dtypes(device):
    """EVA ViT-g + Q-Former built empty (``torch.empty``: no page is touched, so this costs no
    memory), straight in the run's dtypes: no fp32 copy first, no random init."""
    model = MiniGPT4.build_empty(_config(device=device), 4096)
    vit, qkv = model.visual_encoder, model.visual_encoder.blocks[0].attn.qkv
    assert sum(p.numel() for p in vit.parameters()) == 985_894_528
    if device == "cpu":  # the default cpu_dtype
        assert {p.dtype for p in vit.parameters()} == {BF16}
        assert {p.dtype for p in model.Qformer.parameters()} == {BF16}
    else:  # vit_precision fp16: exactly the Linear/Conv weights, as the original casts them
        assert qkv.weight.dtype == FP16 and vit.patch_embed.proj.bias.dtype == FP16
        assert vit.cls_token.dtype == vit.blocks[0].attn.q_bias.dtype == FP32
        assert {p.dtype for p in model.Qformer.parameters()} == {FP32}
    assert vit.blocks[0].attn.k_bias.abs().sum() == 0  # EVA's fixed zero key bias
    assert {p.dtype for p in model.ln_vision.parameters()} == {FP32}
    assert torch.equal(model.ln_vision.weight, torch.ones(1408))
    assert model.llama_proj.weight.dtype == FP32 and model.llama_proj.weight.std() > 0


def _dtypes_seen(model, run) -> dict[str, set]:
    """Input dtypes of every ViT block, Q-Former layer and LLM decoder layer during ``run``."""
    seen: dict[str, set] = {"vit": set(), "qformer": set(), "llm": set()}
    parts = {
        "vit": model.visual_encoder.blocks,
        "qformer": model.Qformer.encoder.layer,
        "llm": model.llama_model.model.layers,
    }
    hooks = [
        layer.register_forward_pre_hook(
            lambda _m, args, kwargs, key=key: seen[key].add(
                (list(args) or list(kwargs.values()))[0].dtype
            ),
            with_kwargs=True,
        )
        for key, layers in parts.items()
        for layer in layers
    ]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def test_bf16_on_cpu_computes_in_bf16(ref):
    model = MiniGPT4.from_config(tiny_model_config(stage=2, cpu_dtype="bf16")).eval()
    for name in ("visual_encoder", "Qformer", "llama_model"):
        dtypes = {p.dtype for p in getattr(model, name).parameters()}
        assert dtypes == {BF16}, name
    assert model.query_tokens.dtype == BF16
    assert {p.dtype for p in model.ln_vision.parameters()} == {FP32}
    assert {p.dtype for p in model.llama_proj.parameters()} == {FP32}
    images = ref["images_eval_processed"]
    samples = {"image": images, "text_input": list(ref["stage2"]["text"])}

    with torch.no_grad():
        seen = _dtypes_seen(model, lambda: model.encode_img(images))
        assert seen["vit"] == {BF16} and seen["qformer"] == {BF16}
        inputs_llama, _ = model.encode_img(images)
        assert inputs_llama.dtype == BF16
        seen = _dtypes_seen(model, lambda: model(samples))
        assert seen["llm"] == {BF16}
        loss = model(samples)["loss"]
    assert loss.dtype == FP32  # the loss stays fp32
    # bf16 keeps 8 bits of mantissa: close to the original's fp32 numbers, not equal.
    close = torch.allclose(inputs_llama.float(), ref["inputs_llama"], rtol=0.05, atol=0.05)
    assert close and abs(loss.item() - ref["stage2"]["loss"].item()) < 0.05

    from minigpt4.models.generation import GenerationSettings, StopRule

    context = model.get_context_emb("<s>Hi <ImageHere> ok", [inputs_llama[:1]])
    settings = GenerationSettings(max_new_tokens=3, do_sample=False)
    seen = _dtypes_seen(
        model,
        lambda: model.generate_from_embeddings(
            [context], [settings], [StopRule((), (), frozenset())]
        ),
    )
    assert seen["llm"] == {BF16}


def test_fp32_on_cpu_is_exact(ref):
    model = MiniGPT4.from_config(tiny_model_config(stage=1))  # the fixtures' cpu_dtype: fp32
    assert {p.dtype for p in model.parameters()} == {FP32}
    with torch.no_grad():
        inputs_llama, _ = model.encode_img(ref["images_eval_processed"])
    assert (inputs_llama - ref["inputs_llama"]).abs().max() <= 1e-5


def test_the_chosen_dtypes_are_logged(caplog):
    with caplog.at_level(logging.INFO, logger="minigpt4.models.loading"):
        MiniGPT4.from_config(tiny_model_config(stage=1, cpu_dtype="bf16", with_ckpt=False))
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Running on")]
    assert line.startswith("Running on cpu: ViT and Q-Former bf16, LLM bf16;")
    assert "model.cpu_dtype" in line


@pytest.mark.parametrize(
    ("device", "adapter", "expected"),
    [
        ("cpu", "qformer", "Running on cpu: ViT and Q-Former bf16, LLM bf16;"),
        ("cpu", "group", "Running on cpu: ViT bf16, LLM bf16;"),
        ("cuda", "qformer", "Running on cuda: ViT fp16 Linear/Conv, Q-Former fp32, LLM fp16,"),
        ("cuda", "group", "Running on cuda: ViT fp16 Linear/Conv, LLM fp16,"),
    ],
)
def test_the_log_line_names_only_the_parts_the_variant_has(device, adapter, expected):
    precision = Precision.of(_config(image_adapter=adapter), device)
    assert precision.describe().startswith(expected)
