"""MiniGPT-v2 end to end on the tiny set V: the eval config's chat in the run modes a CPU user
has (bf16, the config's 8-bit low_resource, 4-bit), and training steps that move only
``llama_proj`` and LoRA, saved and loaded back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from minigpt4.conversation.loading import load_chat
from minigpt4.models import lora
from minigpt4.models.weights import save_weights, training_checkpoint_state
from minigpt4.processors.blip_processors import Blip2ImageEvalProcessor
from tests.model_fixtures import load_v2_reference, v2_model, v2_options
from tests.test_model_parity_minigptv2 import batch_samples


@pytest.fixture(scope="module")
def ref():
    return load_v2_reference()


def raw_image(ref, index: int = 0) -> Image.Image:
    return Image.fromarray(np.asarray(ref["raw_images_uint8"][index]))


RUN_MODES = (
    ["model.low_resource=False"],
    ["model.low_resource=True"],
    ["model.llm_quantization=4bit"],
    ["model.llm_quantization=4bit", "model.cpu_quantized=torch"],  # LoRA over torch's int4 kernel
)


@pytest.mark.parametrize("mode", RUN_MODES)
def test_eval_config_chats_on_cpu(ref, mode):
    keep = ("model.low_resource", "model.cpu_dtype")  # the config's and the CPU's defaults
    options = [o for o in v2_options(ref["tiny_hparams"]) if not o.startswith(keep)]
    chat = load_chat("eval_configs/minigptv2_eval.yaml", "cpu", options + mode)
    assert lora.dropout_modules(chat.model.llama_model)  # LoRA on the (quantized) LLM
    conv, img_list = chat.new_conversation(), []
    chat.upload_img(raw_image(ref), conv, img_list)
    chat.ask("[refer] the red shape", conv)
    text, tokens = chat.answer(conv, img_list, max_new_tokens=6, seed=0)
    assert 0 < len(tokens) <= 6 and isinstance(text, str)
    assert conv.get_prompt().startswith("<s>[INST] <Img><ImageHere></Img> [refer] the red shape")


def test_training_moves_only_llama_proj_and_lora_and_saves_them(ref, tmp_path):
    model = v2_model("finetune", ref["tiny_hparams"]).train()
    processor = Blip2ImageEvalProcessor(image_size=model.config.image_size)
    images = torch.stack([processor(raw_image(ref, i)) for i in range(2)])
    samples = batch_samples(ref, images, "grounding")
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    torch.manual_seed(0)
    losses = []
    for _ in range(4):
        optimizer.zero_grad()
        loss = model(samples)["loss"]
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for name, param in model.named_parameters():
        before = frozen.get(name, trained.get(name))
        assert torch.equal(param, before) is (name in frozen), name
    assert {n.split(".")[0] for n in trained} == {"llama_model", "llama_proj"}

    path = tmp_path / "checkpoint.pth"
    save_weights({"model": training_checkpoint_state(model)}, str(path))
    again = v2_model("finetune", ref["tiny_hparams"], [f"model.ckpt={path}"]).eval()
    model.eval()
    with torch.no_grad():
        assert torch.allclose(again(samples)["loss"], model(samples)["loss"], atol=1e-6)


def test_cpu_training_keeps_lora_in_fp32_beside_a_bf16_llm(ref):
    """On a CPU (bf16 LLM, no autocast) LoRA's weights train as fp32 master weights, as
    llama_proj: peft casts their input and output."""
    from minigpt4.common.run_config import RunConfig
    from minigpt4.models.training_precision import prepare_for_training

    model = v2_model("finetune", ref["tiny_hparams"], ["model.cpu_dtype=bf16"])
    model, _ = prepare_for_training(
        model, RunConfig.from_node({"device": "cpu"}), torch.device("cpu")
    )
    trained = {n: p.dtype for n, p in model.named_parameters() if p.requires_grad}
    assert set(trained.values()) == {torch.float32} and any(lora.is_lora_weight(n) for n in trained)
    assert model.llama_model.get_input_embeddings().weight.dtype == torch.bfloat16
    processor = Blip2ImageEvalProcessor(image_size=model.config.image_size)
    images = torch.stack([processor(raw_image(ref, i)) for i in range(2)])
    loss = model.train()(batch_samples(ref, images, "caption"))["loss"]
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    lora_grads = [p.grad for n, p in model.named_parameters() if lora.is_lora_weight(n)]
    assert all(g is not None and g.dtype == torch.float32 for g in lora_grads)
