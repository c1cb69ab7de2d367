"""A text-only batch (MiniGPT-v2's unnatural instructions) trains as the original lays it out:
[BOS][the instruction in the chat template][answer + </s>][padding], labels on the answer."""

import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from minigpt4.common.registry import registry
from tests.model_fixtures import load_v2_reference, v2_model

sys.path.insert(0, str(Path(__file__).parent))
import v2_data_formats


@pytest.fixture(scope="module")
def model():
    return v2_model("finetune", load_v2_reference()["tiny_hparams"]).eval()


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    info = v2_data_formats.write_all(tmp_path_factory.mktemp("v2text"))["unnatural_instruction"]
    cfg = OmegaConf.create(
        {"build_info": info, "text_processor": {"train": {"name": "blip_caption"}}}
    )
    builder = registry.get_builder_class("unnatural_instruction")(cfg, name="unnatural_instruction")
    dataset = builder.build_datasets()["train"]
    return torch.utils.data.default_collate([dataset[0], dataset[1]])


def test_layout_is_bos_prompt_answer(model, batch):
    tok = model.llama_tokenizer
    inputs = model.prepare_llm_inputs(batch)
    for row in range(2):
        prompt = tok.encode(model.config.prompt_template.format(batch["instruction_input"][row]))
        answer = tok.encode(batch["answer"][row]) + [tok.eos_token_id]
        ids = [tok.bos_token_id] + prompt + answer
        n = len(ids)
        expected = model.embed_tokens(torch.tensor([ids]))[0]
        assert torch.equal(inputs["inputs_embeds"][row, :n], expected)
        assert inputs["attention_mask"][row, :n].tolist() == [1] * n
        assert not inputs["attention_mask"][row, n:].any()
        labels = inputs["labels"][row]
        assert labels[1 + len(prompt) : n].tolist() == answer
        assert (labels[: 1 + len(prompt)] == -100).all() and (labels[n:] == -100).all()
    assert "[INST] " in model.config.prompt_template  # the chat template was applied


def test_text_only_batch_trains(model, batch):
    assert "image" not in batch
    loss = model.train()(batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for n, p in model.named_parameters() if p.requires_grad and "lora" in n]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    model.zero_grad(set_to_none=True)


def test_text_only_batch_without_instructions_is_refused(model):
    with pytest.raises(ValueError, match="without images needs an instruction_input"):
        model.prepare_llm_inputs({"answer": ["a", "b"]})
