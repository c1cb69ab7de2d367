"""What trains is configuration (issue 22 item 4): ``model.trainable`` with ``freeze_vit`` /
``freeze_qformer`` applied by one function, train/eval mode per part without an eval lock, and
gradient checkpointing in the LLM that changes memory, not numbers."""

from __future__ import annotations

import random

import pytest
import torch

from minigpt4.models.mini_gpt4 import MiniGPT4
from minigpt4.models.model_config import MiniGPT4Config
from tests.model_fixtures import load_reference, tiny_model_config

STEPS = 3
CHECKPOINT_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def ref():
    return load_reference()


def _samples(ref):
    return {"image": ref["images_eval_processed"], "text_input": list(ref["stage2"]["text"])}


def _trained(names):
    return sorted(names)


def test_default_trains_llama_proj_and_named_parts_train_too():
    model = MiniGPT4.from_config(tiny_model_config(stage=1))
    assert _trained(n for n, p in model.named_parameters() if p.requires_grad) == [
        "llama_proj.bias",
        "llama_proj.weight",
    ]
    model = MiniGPT4.from_config(tiny_model_config(stage=1, freeze_qformer=False))
    trained = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {"Qformer", "query_tokens", "llama_proj"}
    model.train()
    assert model.Qformer.training and not model.visual_encoder.training

    layer = "llama_model.model.layers.1"
    model = MiniGPT4.from_config(tiny_model_config(stage=1, trainable=["llama_proj", layer]))
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith((layer + ".", "llama_proj.")) for n in trained)
    model.train()
    # The partly trained LLM is in train mode where it trains, eval elsewhere.
    layers = model.llama_model.model.layers
    assert layers[1].training and model.llama_model.training
    assert not layers[0].training and not model.llama_model.lm_head.training
    assert not model.visual_encoder.training and not model.Qformer.training
    model.eval()
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize(
    "values, message",
    [
        (
            {"trainable": ["visual_encoder.blocks.0"]},
            "'visual_encoder.blocks.0' and model.freeze_vit",
        ),
        ({"trainable": ["Qformer"]}, "'Qformer' and model.freeze_qformer"),
        ({"trainable": "llama_proj  "}, None),
        ({"trainable": [""]}, "model.trainable must be a list of module-name prefixes"),
        ({"trainable": [3]}, "model.trainable must be a list of module-name prefixes"),
    ],
)
def test_trainable_key_is_checked(values, message):
    if message is None:
        assert MiniGPT4Config.from_cfg({"llama_model": "x", **values}).trainable == ("llama_proj",)
        return
    with pytest.raises(ValueError, match=message):
        MiniGPT4Config.from_cfg({"llama_model": "x", **values})


def test_a_name_matching_no_parameter_is_an_error():
    with pytest.raises(ValueError, match=r"model.trainable names \['llama_prj'\]"):
        MiniGPT4.from_config(tiny_model_config(stage=1, trainable=["llama_prj"]))


def _train_steps(ref, grad_checkpoint: bool) -> tuple[MiniGPT4, list[int]]:
    model = MiniGPT4.from_config(
        tiny_model_config(stage=2, use_grad_checkpoint_llm=grad_checkpoint)
    )
    model.prompt_list = model.prompt_list[:1]
    model.train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.05
    )
    saved = []
    for _ in range(STEPS):
        random.seed(0)
        count = [0]

        def pack(tensor, count=count):
            count[0] += 1
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(_samples(ref))["loss"]
        saved.append(count[0])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, saved


def test_llm_gradient_checkpointing_gives_the_same_llama_proj(ref):
    plain, saved_plain = _train_steps(ref, grad_checkpoint=False)
    ckpt, saved_ckpt = _train_steps(ref, grad_checkpoint=True)
    assert ckpt.llama_model.training and not plain.llama_model.training
    assert not ckpt.visual_encoder.training and not ckpt.Qformer.training
    # The decoder layers keep only their inputs: far fewer tensors saved for backward.
    assert all(c < p / 2 for c, p in zip(saved_ckpt, saved_plain)), (saved_ckpt, saved_plain)
    for name in ("weight", "bias"):
        a = getattr(plain.llama_proj, name)
        b = getattr(ckpt.llama_proj, name)
        assert (a - b).abs().max().item() <= CHECKPOINT_TOLERANCE
