"""Parity with the original's MiniGPT-v2 on its tiny reference set V (fp32, CPU).

tests/fixtures/reference/minigptv2/ (README there) holds the original's tiny weights and what its
code computed. Each model is built from the shipped v2 configs through the registry and
``from_config``, as the original was run; sizes, LoRA rank and alpha come from the set's
``tiny_hparams``, so a set made the same way with other sizes works unchanged. Tensors agree
within 1e-5, prompts, token ids and greedy tokens exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from minigpt4.common.eval_utils import prepare_texts
from minigpt4.conversation import Chat
from minigpt4.conversation.templates import CONV_VISION_minigptv2
from minigpt4.models import lora
from minigpt4.models.generation import GenerationSettings, left_pad
from minigpt4.models.loading.key_maps import interpolate_pos_embed
from minigpt4.models.mini_gpt4 import causal_lm_loss
from minigpt4.models.minigpt_v2 import MiniGPTv2
from minigpt4.models.projection import grouped_patches
from minigpt4.processors.blip_processors import Blip2ImageEvalProcessor, BlipCaptionProcessor
from tests.model_fixtures import assert_close, load_v2_reference, v2_model

BATCHES = ("caption", "grounding", "vqa", "conversation")


@pytest.fixture(scope="module")
def ref():
    return load_v2_reference()


@pytest.fixture(scope="module")
def models(ref):
    return {stage: v2_model(stage, ref["tiny_hparams"]) for stage in ref["model_attrs"]}


@pytest.fixture(scope="module")
def images(ref):
    """The two images through our ``blip2_image_eval`` at the model's size (the original's
    training processor gives the same tensor, ``train_processor_equals_eval_processor``)."""
    size = ref["processors"]["eval"]["image_size"]
    processor = Blip2ImageEvalProcessor(image_size=size)
    raw = [Image.fromarray(np.asarray(a)) for a in ref["raw_images_uint8"]]
    return torch.stack([processor(image) for image in raw])


def assert_equal(actual, expected, name: str) -> None:
    actual = actual.tolist() if isinstance(actual, torch.Tensor) else actual
    expected = expected.tolist() if isinstance(expected, torch.Tensor) else expected
    assert actual == expected, name


def test_processor_gives_the_originals_images(images, ref):
    check = ref["images_eval_processed_check"]
    assert list(images.shape) == check["shape"]
    assert_close(images[:, :, ::8, ::8], check["strided"], "images (every 8th pixel)")
    assert abs(images.double().sum().item() - check["sum"]) < 1e-2
    assert abs(images.double().abs().sum().item() - check["abs_sum"]) < 1e-2
    caption = BlipCaptionProcessor()
    assert [caption(t) for t in ref["caption_processor"]["in"]] == ref["caption_processor"]["out"]


def test_configs_build_the_originals_model(models, ref):
    info = ref["lora"]
    for stage, model in models.items():
        attrs = ref["model_attrs"][stage]
        assert type(model) is MiniGPTv2
        assert (model.max_txt_len, model.end_sym) == (attrs["max_txt_len"], attrs["end_sym"])
        assert model.config.prompt_template == attrs["prompt_template"]
        assert model.prompt_list == attrs["prompt_list"]
        assert model.max_context_len == attrs["max_context_len"]
        assert model.config.template_instructions is attrs["chat_template"]
        assert model.config.use_grad_checkpoint is attrs["vit_use_checkpoint"]
        assert model.config.use_grad_checkpoint_llm is attrs["llm_gradient_checkpointing"]
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        assert list(lora.to_original_names(dict.fromkeys(trainable))) == ref["trainable_params"]
        q_proj = model.llama_model.base_model.model.model.layers[0].self_attn.q_proj
        assert q_proj.r["default"] == info["r"]
        assert q_proj.lora_alpha["default"] == info["lora_alpha"]
        assert q_proj.scaling["default"] == info["scaling"]
        assert q_proj.lora_dropout["default"].p == info["dropout_p"]
        # Only the rotary buffers of the file have no place here (transformers 5 computes them).
        assert all(k.endswith("rotary_emb.inv_freq") for k in model.load_report["model.ckpt"])
    tok = models["eval"].llama_tokenizer
    info = ref["tokenizer"]
    assert (tok.pad_token, tok.pad_token_id) == (info["pad_token"], info["pad_token_id"])
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (1, 2, 0)
    for text, ids in info["examples"].items():
        assert tok.encode(text) == ids, text
    for text, ids in info["examples_with_bos"].items():
        assert tok.encode(text, add_bos=True) == ids, text


def test_state_dict_keys_are_the_originals(models, ref):
    """Every key and shape of the original's state dict, in its peft 0.2.0 names, but the
    per-layer rotary ``inv_freq`` buffers, which transformers 5 keeps elsewhere unsaved."""
    original = {
        k: tuple(v[0]) for k, v in ref["state_dict_keys"].items() if not k.endswith("inv_freq")
    }
    ours = lora.to_original_names(models["eval"].state_dict())
    assert {k: tuple(v.shape) for k, v in ours.items()} == original


def test_pos_embed_is_interpolated_at_load(models, ref):
    expected = ref["pos_embed"]["interpolated_448"]
    checkpoint = ref["pos_embed"]["checkpoint_224"]
    assert_close(interpolate_pos_embed(checkpoint, expected.shape[1] - 1), expected, "resized")
    for model in models.values():
        assert_close(model.visual_encoder.pos_embed, expected, "pos_embed")
        assert model.visual_encoder.pos_embed.dtype == torch.float32


def test_encode_img(models, ref, images):
    model = models["eval"]
    params = ref["ln_vision_params"]
    assert model.ln_vision.eps == params["eps"]
    assert_equal(model.ln_vision.weight, params["weight"], "ln_vision never loaded: ones")
    assert_equal(model.ln_vision.bias, params["bias"], "ln_vision never loaded: zeros")
    with torch.no_grad():
        vit_out = model.visual_encoder(images)
        ln_out = model.ln_vision(vit_out)
        inputs_llama, atts = model.encode_img(images)
        checkpointed = models["finetune"].visual_encoder(images)  # use_grad_checkpoint: True
    assert_close(vit_out, ref["vit_out"], "vit_out")
    assert_close(checkpointed, ref["vit_out"], "vit_out with the ViT's checkpointing")
    assert_close(ln_out, ref["ln_vision_out"], "ln_vision_out")
    assert_close(grouped_patches(ln_out), ref["image_embeds_grouped"], "image_embeds_grouped")
    assert_close(inputs_llama, ref["inputs_llama"], "inputs_llama")
    assert_equal(atts, ref["atts_llama"], "atts_llama")
    assert atts.dtype == ref["atts_llama"].dtype


def batch_samples(ref, images, name: str) -> dict:
    return {"image": images, **ref["train"][name]["samples_text"]}


def check_logits(logits: torch.Tensor, labels: torch.Tensor, expected: dict, name: str) -> None:
    """The logits at every position that predicts a label, and their arg-max everywhere."""
    sums = expected["logits_checksum"]
    assert logits.dtype == torch.float32  # peft 0.2.0's CastOutputToFloat
    assert_equal(logits.argmax(-1), sums["argmax"], f"{name}: argmax")
    batch, position = torch.nonzero(labels[:, 1:] != -100, as_tuple=True)
    at_labels = logits[batch, position]
    reference = sums["logits_at_label_positions"]
    # 1e-5 relative to the logits' scale (|logit| up to ~8 here: a few fp32 ulps)
    scale = max(1.0, reference.abs().max().item())
    assert_close(at_labels, reference, f"{name}: logits at labels", atol=1e-5 * scale)
    targets = labels[:, 1:][batch, position]
    assert_equal(targets, sums["label_targets"], f"{name}: label targets")
    nll = torch.nn.functional.cross_entropy(at_labels, targets, reduction="none")
    assert_close(nll, sums["token_nll"], f"{name}: token nll")


@pytest.mark.parametrize("name", BATCHES)
def test_training_batch_inputs_loss_and_gradients(models, ref, images, name):
    """caption / grounding / vqa (instructions in the chat template) and a multi-turn
    conversation, through the fine-tuning config; gradients of llama_proj and layer 0's LoRA."""
    model, expected = models["finetune"].eval(), ref["train"][name]  # the reference: eval mode
    samples = batch_samples(ref, images, name)
    llm_inputs = model.prepare_llm_inputs(samples)
    assert_close(llm_inputs["inputs_embeds"], expected["inputs_embeds"], f"{name}: inputs_embeds")
    assert_equal(llm_inputs["attention_mask"], expected["attention_mask"], f"{name}: mask")
    assert_equal(llm_inputs["labels"], expected["targets"], f"{name}: labels")
    model.zero_grad(set_to_none=True)
    logits = model.llama_model(
        inputs_embeds=llm_inputs["inputs_embeds"], attention_mask=llm_inputs["attention_mask"]
    ).logits
    check_logits(logits.detach(), llm_inputs["labels"], expected, name)
    loss = causal_lm_loss(logits, llm_inputs["labels"])
    assert_close(loss, expected["loss"], f"{name}: loss")
    loss.backward()
    check_gradients(model, expected, name)
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        assert_close(model(samples)["loss"], expected["loss"], f"{name}: forward loss")
        per_sample = model(samples, reduction="none")["loss"]
    assert_close(per_sample, expected["loss_reduction_none"], f"{name}: reduction none")


def check_gradients(model, expected: dict, name: str) -> None:
    assert_close(model.llama_proj.weight.grad, expected["grad_llama_proj_weight"], f"{name}: dW")
    assert_close(model.llama_proj.bias.grad, expected["grad_llama_proj_bias"], f"{name}: db")
    attn = model.llama_model.base_model.model.model.layers[0].self_attn
    for key, grad in expected["grad_lora_layer0"].items():
        proj, part = key.split(".")
        weight = getattr(getattr(attn, proj), part)["default"].weight
        assert_close(weight.grad, grad, f"{name}: grad {key}")


def test_instructions_are_formatted_into_the_chat_template(models, ref):
    model = models["finetune"]
    for name in ("caption", "grounding", "vqa"):
        expected = ref["train"][name]
        own = expected["samples_text"]["instruction_input"]
        prompts = model._batch_prompts({"instruction_input": own}, None, len(own))
        assert prompts == expected["instruction_after_chat_template"]
        tok = model.llama_tokenizer
        seg_ids = [[tok.encode(s) for s in p.split("<ImageHere>")] for p in prompts]
        assert seg_ids == expected["prompt_seg_ids"]


def test_lora_dropout_trains_in_train_mode(ref, images):
    """As the original (from_config returns a train-mode model), LoRA's dropout is active in
    training; with it off the loss is the eval-mode one."""
    model = v2_model("finetune", ref["tiny_hparams"]).train()
    dropouts = lora.dropout_modules(model.llama_model)
    assert dropouts and all(m.training for m in dropouts)
    assert not model.visual_encoder.training  # frozen parts stay in eval mode
    samples = batch_samples(ref, images, "grounding")
    for m in dropouts:
        m.eval()
    with torch.no_grad():
        loss = model(samples)["loss"]
    assert_close(loss, ref["train"]["grounding"]["train_mode_dropout_off_loss"], "dropout off")


def test_llm_gradient_checkpointing_gives_the_same_loss_and_gradients(ref, images):
    expected = ref["use_grad_checkpoint_llm"]
    extra = ["model.use_grad_checkpoint_llm=True"]
    model = v2_model("finetune", ref["tiny_hparams"], extra).train()
    assert model.llama_model.training  # transformers checkpoints only in train mode
    for m in lora.dropout_modules(model.llama_model):
        m.eval()  # as the reference: dropout off
    loss = model(batch_samples(ref, images, "grounding"))["loss"]
    loss.backward()
    assert_close(loss, expected["loss"], "checkpointed loss")
    check_gradients(model, ref["train"]["grounding"], "checkpointed")


def test_chat_two_turns(models, ref, images):
    expected = ref["chat"]
    chat = Chat(models["eval"].eval(), vis_processor=None, device="cpu")
    conv = chat.new_conversation()
    assert (conv.system, conv.roles, conv.sep) == (
        expected["conv_template"]["system"],
        tuple(expected["conv_template"]["roles"]),
        expected["conv_template"]["sep"],
    )
    assert conv.get_prompt() == CONV_VISION_minigptv2.get_prompt()
    defaults = chat.settings()
    assert (defaults.repetition_penalty, defaults.top_p, defaults.do_sample) == (1.05, 0.9, True)
    img_list: list[torch.Tensor] = []
    image = images[expected["image_index"]]
    assert chat.upload_img(image, conv, img_list) == expected["upload_msg"]
    assert_close(img_list[0], expected["image_emb"], "image_emb")
    for turn in expected["turns"]:
        check_chat_turn(chat, conv, img_list, turn, expected["max_new_tokens"])
        assert conv.get_prompt() == turn["conv_after"]
        assert conv.messages == [list(m) for m in turn["messages_after"]]


def test_demo_v2_history_keeps_eos_as_each_answer(models, ref, images):
    """demo_v2.py stores '</s>' as every finished answer, so its next prompt reads
    '[/INST]</s><s>[INST] ...'; the same turns through the Chat with that history."""
    expected = ref["chat"]
    chat = Chat(models["eval"].eval(), vis_processor=None, device="cpu")
    conv, img_list = chat.new_conversation(), []
    chat.upload_img(images[expected["image_index"]], conv, img_list)
    for turn in expected["demo_v2_history_variant"]["turns"]:
        check_chat_turn(chat, conv, img_list, turn, expected["max_new_tokens"])
        conv.messages[-1][1] = "</s>"  # what gradio_stream_answer leaves in the state
        assert conv.get_prompt() == turn["conv_after"]
        assert conv.messages == [list(m) for m in turn["messages_after"]]


def check_chat_turn(chat, conv, img_list, turn: dict, max_new_tokens: int) -> None:
    chat.ask(turn["question"], conv)
    opened = conv.copy()
    opened.append_message(opened.roles[1], None)
    prompt = opened.get_prompt()
    assert prompt == turn["prompt"]
    # Two BOS: the template's literal <s> and the tokenizer's; "[" right after <s> is "▁[".
    assert chat.model.segment_ids(prompt) == turn["seg_ids"]
    context = chat.model.get_context_emb(prompt, img_list)
    assert_close(context, turn["context_embs"], "context_embs")
    plain = GenerationSettings(max_new_tokens=max_new_tokens, do_sample=False)
    (greedy,) = chat.model.generate_from_embeddings([context], [plain], [chat.stop_rule])
    assert greedy.tokens == turn["greedy_plain_raw"][1:].tolist()
    # The Chat's defaults with top_p 0.001 (only the arg-max survives), as the harness asked.
    text, tokens = chat.answer(conv, img_list, max_new_tokens=max_new_tokens, top_p=1e-3, seed=0)
    assert tokens.tolist() == turn["answer_tokens"][1:].tolist()
    assert text == turn["answer_text"]


@pytest.mark.parametrize("name", ["refcoco", "vqa"])
def test_batch_generate_with_prepare_texts(models, ref, images, name):
    """HEAD's ``model.generate(images, texts)`` on ``prepare_texts`` prompts (the eval
    scripts' path): left padding with zero embeddings, greedy, the original's cleaning."""
    model, expected = models["benchmark"].eval(), ref["batch_generate"][name]
    conv_temp = CONV_VISION_minigptv2.copy()
    conv_temp.system = ref["batch_generate"]["conv_temp_system"]
    texts = prepare_texts(expected["questions"], conv_temp)
    assert texts == expected["texts"]
    assert [model.segment_ids(t) for t in texts] == expected["seg_ids"]
    with torch.no_grad():
        image_embs, _ = model.encode_img(images)
        contexts = [model.get_context_emb(t, [image_embs[i : i + 1]]) for i, t in enumerate(texts)]
    embeds, mask = left_pad(contexts)
    assert_close(embeds, expected["inputs_embeds"], "inputs_embeds")
    assert_equal(mask, expected["attention_mask"], "attention_mask")
    kwargs = expected["generate_kwargs"]
    answers = model.generate(images, texts, **kwargs)
    assert answers == expected["answers"]
    settings = GenerationSettings(max_new_tokens=kwargs["max_new_tokens"], do_sample=False)
    rule = Chat(model, None, device="cpu").stop_rule
    results = model.generate_from_embeddings(contexts, [settings] * 2, [rule] * 2)
    raw = expected["raw_output"][:, 1:]
    for result, row in zip(results, raw):
        assert result.tokens == row[: len(result.tokens)].tolist()
        assert all(t == 0 for t in row[len(result.tokens) :].tolist())  # finished: pad id 0


def test_multi_select_ranks_candidates_by_per_sample_loss(models, ref, images):
    """The original's IconQA ranking: candidate j of sample i scored by ``forward``'s
    ``reduction="none"`` loss; candidates beyond ``num_cand`` last."""
    model, caption = models["finetune"].eval(), ref["train"]["caption"]
    texts = caption["samples_text"]["instruction_input"]
    right = caption["samples_text"]["answer"]
    wrong = ["zzzz qqqq", "xx yy zz ww"]
    candidates = [wrong, right, list(reversed(right))]
    losses = torch.stack(
        [model({"image": images, "instruction_input": texts, "answer": c}, "none")["loss"]
         for c in candidates],
        dim=-1,
    )  # fmt: skip
    assert_close(losses[:, 1], caption["loss_reduction_none"], "candidate losses")
    ranks = model.multi_select(images, texts, candidates)
    assert ranks == torch.argsort(losses, dim=-1, stable=True).tolist()
    assert ranks != [[0, 1, 2], [0, 1, 2]]  # the losses order them
    limited = model.multi_select(images, texts, candidates, num_cand=[1, 2])
    assert limited[0][0] == 0 and sorted(limited[0][1:]) == [1, 2]
    assert limited[1][2] == 2 and sorted(limited[1][:2]) == [0, 1]
