"""Full-size layout: real-size EVA ViT-g, Q-Former and 7B/13B-shaped LLaMA built on the meta device.

Their state-dict names, shapes (and, for the fp16 ViT, dtypes) must match the original's key lists
in tests/fixtures/keys/ under the loading code's key mapping, and only ``llama_proj`` may train.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from minigpt4.models.mini_gpt4 import MiniGPT4
from minigpt4.models.qformer import LAVIS_POSITION_IDS, ours_to_lavis
from tests.model_fixtures import LLAMA_SIZES, LLAMA_VOCAB, build_full_size, tiny_model_config

KEYS_DIR = Path(__file__).resolve().parent / "fixtures" / "keys"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64}

EVA_VIT_G_PARAMS = 985_894_528  # FACTS c, counted by running the original


def read_keys(name: str) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    out = {}
    for line in (KEYS_DIR / name).read_text().splitlines():
        key, shape, dtype = line.split("\t")
        out[key] = (tuple(int(x) for x in shape.strip("[]").split(",") if x.strip()), DTYPES[dtype])
    return out


def layout(state: dict[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {k: (tuple(v.shape), v.dtype) for k, v in state.items()}


@pytest.fixture(scope="module")
def full_7b() -> MiniGPT4:
    return build_full_size("7B")


def test_eva_vit_g_layout_and_fp16_cast(full_7b):
    """Names and shapes of eva_vit_g.pth; with vit_precision fp16 exactly Linear/Conv are fp16."""
    expected = read_keys("eva_vit_g_keys.txt")
    assert layout(full_7b.visual_encoder.state_dict()) == expected
    assert sum(p.numel() for p in full_7b.visual_encoder.parameters()) == EVA_VIT_G_PARAMS
    assert full_7b.ln_vision.eps == 1e-5
    assert full_7b.ln_vision.weight.shape == (1408,)


def test_qformer_layout_under_lavis_mapping(full_7b):
    expected = read_keys("qformer_minigpt4_keys.txt")
    ours = {
        k: v
        for k, v in full_7b.state_dict().items()
        if k == "query_tokens" or k.startswith(("Qformer.", "ln_vision."))
    }
    # The position_ids buffer is the one key with no counterpart (documented in qformer.py).
    del expected[LAVIS_POSITION_IDS]
    assert layout(ours_to_lavis(ours)) == expected
    qformer_params = sum(p.numel() for p in full_7b.Qformer.parameters())
    assert round(qformer_params / 1e6, 2) == 105.14  # FACTS c: "105.14 M after" pruning
    assert full_7b.query_tokens.shape == (1, 32, 768)


@pytest.mark.parametrize("llm_size", ["7B", "13B"])
def test_llm_layout_and_trainable_parameters(llm_size, full_7b):
    model = full_7b if llm_size == "7B" else build_full_size("13B")
    sizes = LLAMA_SIZES[llm_size]
    hidden, inter = sizes["hidden_size"], sizes["intermediate_size"]
    expected = {
        "model.embed_tokens.weight": (LLAMA_VOCAB, hidden),
        "model.norm.weight": (hidden,),
        "lm_head.weight": (LLAMA_VOCAB, hidden),
    }
    for i in range(sizes["num_hidden_layers"]):
        prefix = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            expected[f"{prefix}self_attn.{name}.weight"] = (hidden, hidden)
        expected[f"{prefix}mlp.gate_proj.weight"] = (inter, hidden)
        expected[f"{prefix}mlp.up_proj.weight"] = (inter, hidden)
        expected[f"{prefix}mlp.down_proj.weight"] = (hidden, inter)
        expected[f"{prefix}input_layernorm.weight"] = (hidden,)
        expected[f"{prefix}post_attention_layernorm.weight"] = (hidden,)
    got = {k: tuple(v.shape) for k, v in model.llama_model.state_dict().items()}
    # The rotary inv_freq buffers of the 4.28 layout are recomputed, not stored, by transformers 5.
    assert got == expected
    assert sum(p.numel() for p in model.llama_model.parameters()) == sizes["params"]

    assert model.llama_proj.weight.shape == (hidden, 768)
    assert model.llama_proj.bias.shape == (hidden,)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["llama_proj.weight", "llama_proj.bias"]


def test_tiny_model_matches_original_key_list():
    """The whole MiniGPT4 state dict, under the LAVIS mapping, is the original's (tiny sizes)."""
    model = MiniGPT4.from_config(tiny_model_config(stage=1))
    expected = {k: v[0] for k, v in read_keys("tiny_minigpt4_keys.txt").items()}
    # Buffers the original stored and this implementation does not: the Q-Former's position_ids
    # and LLaMA's rotary inv_freq (recomputed identically by transformers 5).
    dropped = {k for k in expected if k == LAVIS_POSITION_IDS or k.endswith("rotary_emb.inv_freq")}
    assert len(dropped) == 1 + 2
    got = {k: tuple(v.shape) for k, v in ours_to_lavis(model.state_dict()).items()}
    assert got == {k: v for k, v in expected.items() if k not in dropped}


def test_llama2_model_layout_on_meta():
    """MiniGPT-4 (LLaMA-2 Chat) at full size: no Q-Former, 4 neighbouring ViT tokens per LLM
    token, llama_proj [4096, 5632], and only llama_proj trains."""
    model = build_full_size("7B", device="cpu", arch="minigpt4")
    assert not hasattr(model, "Qformer") and not hasattr(model, "query_tokens")
    shapes = {k: v[0] for k, v in read_keys("eva_vit_g_keys.txt").items()}
    assert {k: tuple(v.shape) for k, v in model.visual_encoder.state_dict().items()} == shapes
    assert model.llama_proj.weight.shape == (4096, 5632)
    assert model.llama_proj.bias.shape == (4096,)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["llama_proj.weight", "llama_proj.bias"]
    top = {k.split(".")[0] for k in model.state_dict()}
    assert top == {"visual_encoder", "ln_vision", "llama_model", "llama_proj"}
    images = torch.zeros(1, 3, 224, 224, device="meta")
    assert model.encode_img(images)[0].shape == (1, 64, 4096)
