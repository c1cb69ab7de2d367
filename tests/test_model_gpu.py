"""CUDA paths: fp16 ViT cast + fp16/bf16 autocast, and 8-bit / 4-bit LLMs on the GPU.

Skipped without CUDA (``gpu`` marker, see conftest.py). Half precision changes the last digits,
so the comparisons with the original's fp32 numbers use loose tolerances.
"""

from __future__ import annotations

import pytest
import torch

from minigpt4.models.mini_gpt4 import MiniGPT4
from tests.model_fixtures import load_reference, tiny_model_config

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def ref():
    return load_reference()


def _samples(ref, device):
    return {
        "image": ref["images_eval_processed"].to(device),
        "text_input": list(ref["stage1"]["text"]),
    }


@pytest.mark.parametrize(
    "autocast_dtype, dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)]
)
def test_half_precision_on_cuda(ref, autocast_dtype, dtype):
    cfg = tiny_model_config(device="cuda", autocast_dtype=autocast_dtype, attn_implementation=None)
    model = MiniGPT4.from_config(cfg).to("cuda")
    vit = model.visual_encoder
    # vit_precision fp16: exactly Linear/Conv weights and biases are half, the rest stays fp32.
    assert vit.blocks[0].attn.qkv.weight.dtype == torch.float16
    assert vit.patch_embed.proj.bias.dtype == torch.float16
    assert vit.blocks[0].attn.q_bias.dtype == torch.float32
    assert vit.blocks[0].norm1.weight.dtype == torch.float32
    assert vit.pos_embed.dtype == torch.float32
    assert model.ln_vision.weight.dtype == torch.float32
    assert model.llama_model.model.embed_tokens.weight.dtype == dtype
    assert model.llama_proj.weight.dtype == torch.float32  # trained in fp32 under autocast
    with torch.no_grad():
        inputs_llama, _ = model.encode_img(ref["images_eval_processed"].cuda())
        loss = model(_samples(ref, "cuda"))["loss"]
    assert (inputs_llama.float().cpu() - ref["inputs_llama"]).abs().max() < 5e-2
    assert abs(loss.item() - ref["stage1"]["loss"].item()) < 5e-2


@pytest.mark.parametrize("overrides", [{"low_resource": True}, {"llm_quantization": "4bit"}])
def test_quantized_llm_on_cuda(ref, overrides):
    cfg = tiny_model_config(device="cuda", device_8bit=0, attn_implementation=None, **overrides)
    model = MiniGPT4.from_config(cfg).to("cuda")
    with torch.no_grad():
        loss = model(_samples(ref, "cuda"))["loss"]
    if overrides.get("low_resource"):
        # The original's low-resource mode runs the ViT on CPU in fp32.
        assert model.visual_encoder.cls_token.device.type == "cpu"
        assert model.visual_encoder.cls_token.dtype == torch.float32
    assert abs(loss.item() - ref["stage1"]["loss"].item()) < 5e-2


@pytest.mark.parametrize("amp_dtype, dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_a_training_step_has_one_autocast_the_runs_own(ref, amp_dtype, dtype):
    """run.amp_dtype decides; the model's own autocast stays out of the way inside the step."""
    from minigpt4.common.run_config import RunConfig
    from minigpt4.models.training_precision import prepare_for_training

    cfg = tiny_model_config(stage=1, device="cuda", autocast_dtype=amp_dtype)
    run = RunConfig.from_node({"device": "cuda", "amp": True, "amp_dtype": amp_dtype})
    model, plan = prepare_for_training(MiniGPT4.from_config(cfg), run, torch.device("cuda"))
    model = model.to("cuda").train()
    seen = []
    hook = model.llama_model.lm_head.register_forward_hook(
        lambda module, args, out: seen.append((torch.get_autocast_dtype("cuda"), out.dtype))
    )
    with plan.autocast_context():
        loss = model(_samples(ref, "cuda"))["loss"]
    hook.remove()
    loss.backward()
    assert seen == [(dtype, dtype)] and loss.dtype == torch.float32
    assert plan.grad_scaler == (dtype == torch.float16)
    assert model.llama_proj.weight.grad.dtype == torch.float32
