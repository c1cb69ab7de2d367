"""MiniGPT-v2 checkpoints both ways: the original's files (peft 0.2.0 LoRA names) load with every
LoRA weight accounted for, what this project saves is in those names, and LoRA can be merged."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from minigpt4.common.checkpoint_files import CheckpointError
from minigpt4.models import lora
from minigpt4.models.weights import save_weights, training_checkpoint_state
from tests.model_fixtures import V2_DIR, assert_close, load_v2_reference, v2_model

ORIGINAL_CKPT = V2_DIR / "minigptv2_tiny_checkpoint.pth"


@pytest.fixture(scope="module")
def ref():
    return load_v2_reference()


@pytest.fixture(scope="module")
def original_state():
    return torch.load(ORIGINAL_CKPT, map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def model(ref):
    return v2_model("eval", ref["tiny_hparams"]).eval()


def lora_state(model) -> dict[str, torch.Tensor]:
    """The model's LoRA weights in the original's names."""
    state = lora.to_original_names(model.state_dict())
    return {k: v for k, v in state.items() if ".lora_" in k}


def test_every_lora_weight_of_the_originals_file_is_loaded(model, original_state):
    loaded = lora_state(model)
    in_file = {k: v for k, v in original_state.items() if ".lora_" in k}
    assert sorted(loaded) == sorted(in_file) and loaded
    for key, value in in_file.items():
        assert torch.equal(loaded[key], value), key
    assert any(v.abs().sum() > 0 for k, v in in_file.items() if ".lora_B." in k)
    # the rotary inv_freq buffers are the only keys of the file without a place here
    ignored = model.load_report["model.ckpt"]
    assert ignored and all(k.endswith(".self_attn.rotary_emb.inv_freq") for k in ignored)


def test_a_missing_lora_weight_is_an_error(ref, original_state, tmp_path):
    dropped = next(k for k in original_state if ".v_proj.lora_B." in k)
    path = tmp_path / "no_lora_b.pth"
    save_weights({"model": {k: v for k, v in original_state.items() if k != dropped}}, str(path))
    with pytest.raises(CheckpointError, match=r"missing .*v_proj\.lora_B.*model\.lora_r"):
        v2_model("eval", ref["tiny_hparams"], [f"model.ckpt={path}"])


def test_another_lora_rank_is_an_error_naming_lora_r(ref):
    rank = ref["tiny_hparams"]["lora_r"] + 1
    with pytest.raises(CheckpointError, match="mismatched shapes.*model.lora_r"):
        v2_model("eval", ref["tiny_hparams"], [f"model.lora_r={rank}"])


def test_modern_peft_names_load_the_same_weights(ref, model, original_state, tmp_path):
    modern = lora.from_original_names(original_state)
    assert any(".lora_A.default.weight" in k for k in modern)
    path = tmp_path / "modern.pth"
    save_weights({"model": modern}, str(path))
    again = v2_model("eval", ref["tiny_hparams"], [f"model.ckpt={path}"])
    for key, value in lora_state(model).items():
        assert torch.equal(lora_state(again)[key], value), key


def test_saved_checkpoints_have_the_originals_names(ref, model, original_state, tmp_path):
    """What training saves (trainable weights, persistent buffers) is named as the original
    names it, so its ``load_state_dict(strict=False)`` takes every tensor, and loads back
    here unchanged."""
    saved = training_checkpoint_state(model)
    expected = {k for k in original_state if not k.endswith("inv_freq")}
    assert set(saved) == expected
    assert set(saved) <= set(ref["state_dict_keys"])  # nothing "unexpected" for the original
    for key in saved:
        assert torch.equal(saved[key], original_state[key]), key
    path = tmp_path / "saved.pth"
    save_weights({"model": saved}, str(path))
    again = v2_model("eval", ref["tiny_hparams"], [f"model.ckpt={path}"])
    assert set(lora_state(again)) == set(lora_state(model))


def test_load_state_dict_takes_the_originals_names(ref, original_state):
    """The original's own way to load a checkpoint (``load_state_dict(..., strict=False)``)."""
    fresh = v2_model("eval", ref["tiny_hparams"], ["model.ckpt="])
    assert all(v.abs().sum() == 0 for k, v in lora_state(fresh).items() if ".lora_B." in k)
    result = fresh.load_state_dict(original_state, strict=False)
    assert all(k.endswith("inv_freq") for k in result.unexpected_keys)
    for key, value in lora_state(fresh).items():
        assert torch.equal(value, original_state[key]), key


def test_merged_lora_answers_the_same(ref, model):
    merged = v2_model("eval", ref["tiny_hparams"], ["model.merge_lora=True"]).eval()
    assert type(merged.llama_model) is LlamaForCausalLM
    assert not lora_state(merged) and not lora.dropout_modules(merged.llama_model)
    turn = ref["chat"]["turns"][0]
    context = turn["context_embs"]
    with torch.no_grad():
        plain = model.llama_model(inputs_embeds=context).logits
        folded = merged.llama_model(inputs_embeds=context).logits
    assert folded.dtype == torch.float32
    assert_close(folded, plain, "merged logits")


def test_merge_lora_without_lora_is_an_error(ref):
    with pytest.raises(ValueError, match="model.merge_lora is set but the model has no LoRA"):
        v2_model("eval", ref["tiny_hparams"], ["model.merge_lora=True", "model.lora_r=0"])


def test_a_minigptv2_checkpoint_on_minigpt4_names_both():
    """The v2 checkpoint on the tiny MiniGPT-4 v1 model: the error says which model each is."""
    from minigpt4.models.mini_gpt4 import MiniGPT4
    from tests.model_fixtures import tiny_model_config

    with pytest.raises(CheckpointError) as info:
        MiniGPT4.from_config(tiny_model_config(ckpt=str(ORIGINAL_CKPT)))
    message = str(info.value)
    assert "is a checkpoint of MiniGPT-v2 (LLaMA-2 Chat with LoRA: arch minigpt_v2" in message
    assert "builds MiniGPT-4 (Vicuna, Q-Former" in message


def test_real_size_layout_is_the_released_checkpoints():
    """At 7B (meta tensors, nothing allocated): what trains and is saved is the layout of the
    released ``minigptv2_checkpoint.pth``: llama_proj [4096, 5632] and rank-64 LoRA on q_proj
    and v_proj of 32 layers, in peft 0.2.0 names."""
    from tests.model_fixtures import build_full_size

    model = build_full_size("7B", device="cpu", arch="minigpt_v2")
    assert model.visual_encoder.pos_embed.shape == (1, 1025, 1408)  # 448 px: 32 x 32 + CLS
    expected = {"llama_proj.weight": (4096, 5632), "llama_proj.bias": (4096,)}
    for i in range(32):
        for proj in ("q_proj", "v_proj"):
            key = f"{lora.WRAPPED}model.layers.{i}.self_attn.{proj}"
            expected[f"{key}.lora_A.weight"] = (64, 4096)
            expected[f"{key}.lora_B.weight"] = (4096, 64)
    saved = training_checkpoint_state(model)
    assert {k: tuple(v.shape) for k, v in saved.items()} == expected
