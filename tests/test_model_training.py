"""Training semantics: what trains, what stays frozen and in eval mode, prompts, text truncation."""

from __future__ import annotations

import random

import pytest
import torch

from minigpt4.models.mini_gpt4 import MiniGPT4
from minigpt4.models.prompt import IGNORE_INDEX
from tests.model_fixtures import load_reference, tiny_model_config


@pytest.fixture(scope="module")
def ref():
    return load_reference()


@pytest.fixture(scope="module")
def stage2_model():
    return MiniGPT4.from_config(tiny_model_config(stage=2))


def samples_of(ref, texts=None):
    return {
        "image": ref["images_eval_processed"],
        "text_input": list(texts or ref["stage2"]["text"]),
    }


def test_only_llama_proj_gets_gradients_and_frozen_parts_stay_in_eval(
    stage2_model, ref, monkeypatch
):
    model = stage2_model
    monkeypatch.setattr(model, "prompt_list", model.prompt_list[:1])  # same prompt both passes
    model.train()
    for name in ("visual_encoder", "ln_vision", "Qformer", "llama_model"):
        part = getattr(model, name)
        assert not any(m.training for m in part.modules()), f"{name} left eval mode"
    assert model.training and model.llama_proj.training

    model.zero_grad(set_to_none=True)
    loss = model(samples_of(ref))["loss"]
    loss.backward()
    with_grad = sorted(n for n, p in model.named_parameters() if p.grad is not None)
    assert with_grad == ["llama_proj.bias", "llama_proj.weight"]
    assert model.llama_proj.weight.grad.abs().sum() > 0
    # Dropout (p=0.1 in the Q-Former) would make two passes differ.
    again = model(samples_of(ref))["loss"]
    assert torch.equal(loss.detach(), again.detach())
    model.zero_grad(set_to_none=True)


def test_one_random_prompt_per_batch(stage2_model, ref, monkeypatch):
    model = stage2_model
    draws = []
    real_choice = random.choice

    def counting_choice(seq):
        draws.append(list(seq))
        return real_choice(seq)

    monkeypatch.setattr(random, "choice", counting_choice)
    random.seed(0)
    inputs = model.prepare_llm_inputs(samples_of(ref))
    assert draws == [model.prompt_list]
    # Every row carries the same prompt: the unsupervised prefix has the same length and content.
    prefix = [int((row != IGNORE_INDEX).nonzero()[0]) for row in inputs["labels"]]
    assert prefix[0] == prefix[1]
    embeds = inputs["inputs_embeds"]
    n_query = model.query_tokens.shape[1]
    tok = model.llama_tokenizer
    lengths = {
        1 + sum(len(tok.encode(p)) for p in q.split("<ImageHere>")) for q in model.prompt_list
    }
    assert prefix[0] - n_query in lengths
    assert torch.equal(embeds[0, :1], embeds[1, :1])


def test_samples_without_their_own_instruction_get_the_batch_prompt(stage2_model, ref, monkeypatch):
    """A batch mixing records with an ``instruction`` (cc_sbu_align's optional field) and records
    without: each row is what it would be alone with its own prompt."""
    model = stage2_model
    own = "Q: <Img><ImageHere></Img> Is it red? A:"
    shared = model.prompt_list[1]
    monkeypatch.setattr(model, "prompt_list", [shared])
    texts = ["Yes", "a long description of the image"]
    mixed = model.prepare_llm_inputs({**samples_of(ref, texts), "instruction_input": [own, ""]})
    alone = [
        model.prepare_llm_inputs(
            {"image": ref["images_eval_processed"][i : i + 1], "text_input": [texts[i]]}, prompt=p
        )
        for i, p in enumerate([own, shared])
    ]
    none = model.prepare_llm_inputs({**samples_of(ref, texts), "instruction_input": ["", ""]})
    plain = model.prepare_llm_inputs(samples_of(ref, texts))
    for row, single in enumerate(alone):
        keep = mixed["attention_mask"][row].bool()
        assert keep.sum() == single["attention_mask"][0].sum()
        assert torch.allclose(
            mixed["inputs_embeds"][row][keep], single["inputs_embeds"][0], atol=1e-6
        )
        assert mixed["labels"][row][keep].tolist() == single["labels"][0].tolist()
    # all empty: the batch's prompt for every row, as without the key
    assert all(torch.equal(none[k], plain[k]) for k in plain)
    monkeypatch.setattr(model, "prompt_list", [])
    with pytest.raises(ValueError, match="prompt_path"):
        model.prepare_llm_inputs({**samples_of(ref, texts), "instruction_input": [own, ""]})


def test_text_is_truncated_to_max_txt_len_after_adding_end_sym(stage2_model, ref, monkeypatch):
    model = stage2_model
    monkeypatch.setattr(model, "max_txt_len", 5)
    monkeypatch.setattr(model, "prompt_list", [])
    texts = ["a cat", "two dogs playing in the park with a red ball"]
    inputs = model.prepare_llm_inputs(samples_of(ref, texts))
    tok = model.llama_tokenizer
    n_prefix = 1 + model.query_tokens.shape[1]
    expected = []
    for text in texts:
        ids = tok.encode(text + "###")[:5]
        # pad = eos: masked like padding (also an eos in the text would be, as in the original).
        expected.append([IGNORE_INDEX] * n_prefix + ids + [IGNORE_INDEX] * (5 - len(ids)))
    width = max(len(e) for e in expected)
    expected = [e + [IGNORE_INDEX] * (width - len(e)) for e in expected]
    assert inputs["labels"].tolist() == expected
    short = len(tok.encode("a cat###"))
    assert inputs["attention_mask"][0].tolist() == [1] * (n_prefix + short) + [0] * (5 - short)


def test_grad_checkpointing_gives_the_same_features(ref):
    model = MiniGPT4.from_config(tiny_model_config(use_grad_checkpoint=True))
    assert model.visual_encoder.grad_checkpointing
    with torch.no_grad():
        out = model.encode_img(ref["images_eval_processed"])[0]
    assert (out - ref["inputs_llama"]).abs().max() <= 1e-5


@pytest.mark.parametrize(
    "overrides",
    [{"llm_quantization": "4bit"}, {"low_resource": True}],
    ids=["4bit", "low_resource_8bit"],
)
def test_quantized_llm_on_cpu(overrides, ref):
    """bitsandbytes 8-bit (the original's low_resource) and 4-bit NF4 load and stay close (a
    4-bit layer may have moved to torch's int4 kernel: tests/test_int4_linear.py)."""
    import bitsandbytes as bnb

    from minigpt4.models.int4_linear import Int4WeightLinear

    model = MiniGPT4.from_config(tiny_model_config(stage=1, **overrides))
    layer = model.llama_model.model.layers[0].self_attn.q_proj
    four_bit = (bnb.nn.Linear4bit, Int4WeightLinear)
    assert isinstance(layer, four_bit if "llm_quantization" in overrides else bnb.nn.Linear8bitLt)
    with torch.no_grad():
        loss = model(samples_of(ref, ref["stage1"]["text"]))["loss"]
    assert abs(loss.item() - ref["stage1"]["loss"].item()) < 0.05
    if overrides.get("low_resource"):
        assert model.visual_encoder.cls_token.device.type == "cpu"
        assert model.visual_encoder.cls_token.dtype == torch.float32


def test_bad_samples_are_rejected(stage2_model, ref):
    with pytest.raises(ValueError, match="text_input"):
        stage2_model.prepare_llm_inputs({"image": ref["images_eval_processed"], "text_input": "x"})
    samples = {"image": ref["images_eval_processed"][:1], "text_input": ["x"]}
    with pytest.raises(ValueError, match="exactly once"):
        stage2_model.prepare_llm_inputs(samples, prompt="no placeholder")
