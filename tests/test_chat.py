"""Chat against what the original computed (reference set ``chat.*``).

The model is the tiny reference MiniGPT-4 built through ``MiniGPT4.from_config`` (fp32, CPU), so
these tests pin the whole chat path: image embeddings, prompt, segment ids, context embeddings,
truncation, generation arguments, stop words, streaming and post-processing.
"""

from __future__ import annotations

import logging

import pytest
import torch

from minigpt4.conversation import CONV_VISION, Chat, StopOnTokens
from minigpt4.conversation.conversation import TRUNCATION_WARNING
from tests.model_fixtures import load_reference, tiny_model_config

QUESTION = "What is in the picture?"


@pytest.fixture(scope="module")
def ref():
    return load_reference()


@pytest.fixture(scope="module")
def chat():
    import minigpt4  # noqa: F401  (registers the model)
    from minigpt4.common.registry import registry

    model = registry.get_model_class("mini_gpt4").from_config(tiny_model_config(stage=2))
    return Chat(model.eval(), vis_processor=None, device="cpu")


def start(chat, ref):
    conv, img_list = CONV_VISION.copy(), []
    msg = chat.upload_img(ref["images_eval_processed"][1], conv, img_list)
    chat.ask(QUESTION, conv)
    return msg, conv, img_list


def test_prompt_segments_and_context_embeddings(chat, ref):
    msg, conv, img_list = start(chat, ref)
    assert msg == ref["chat"]["upload_msg"]
    conv.append_message(conv.roles[1], None)
    prompt = conv.get_prompt()
    assert prompt == ref["chat"]["prompt"]
    assert chat.segment_ids(prompt) == ref["chat"]["seg_ids"]
    embs = chat.get_context_emb(conv, img_list)
    expected = ref["chat"]["context_embs"].detach()
    assert embs.shape == expected.shape == (1, 109, 64)
    torch.testing.assert_close(embs.detach(), expected, atol=1e-6, rtol=0)


def test_greedy_answer_equals_reference(chat, ref):
    _, conv, img_list = start(chat, ref)
    text, tokens = chat.answer(conv, img_list, max_new_tokens=12, do_sample=False)
    # transformers 4.28 put the bos id in front of the new tokens; version 5 returns only them.
    expected = ref["chat"]["greedy_raw"][1:]
    assert tokens.tolist() == expected.tolist()
    decoded = chat.model.llama_tokenizer.decode(expected)
    assert text == decoded.split("###")[0].split("Assistant:")[-1].strip()
    assert conv.messages[-1] == ["Assistant", text]
    assert conv.get_prompt() == ref["chat"]["prompt"] + " " + text + "###"


def test_streamed_answer_grows_to_the_same_text(chat, ref):
    _, conv, img_list = start(chat, ref)
    pieces = list(chat.stream_answer(conv, img_list, max_new_tokens=12, do_sample=False))
    _, conv2, img_list2 = start(chat, ref)
    text, _ = chat.answer(conv2, img_list2, max_new_tokens=12, do_sample=False)
    assert len(pieces) > 3
    assert pieces[-1] == text == conv.messages[-1][1]
    for shorter, longer in zip(pieces, pieces[1:]):
        assert longer.startswith(shorter.rstrip("\ufffd")) and len(longer) >= len(shorter)


def test_left_truncation_at_max_length(chat, ref, caplog):
    _, conv, img_list = start(chat, ref)
    max_new, max_length = 5, 60
    with caplog.at_level(logging.WARNING):
        _, tokens = chat.answer(
            conv, img_list, max_new_tokens=max_new, max_length=max_length, do_sample=False
        )
    assert TRUNCATION_WARNING in caplog.text
    # Independently: the model sees only the last max_length - max_new_tokens embeddings.
    embs = ref["chat"]["context_embs"].detach()[:, -(max_length - max_new) :]
    out = chat.model.llama_model.generate(
        inputs_embeds=embs,
        attention_mask=torch.ones(embs.shape[:2], dtype=torch.long),
        max_new_tokens=max_new,
        do_sample=False,
    )
    assert tokens.tolist() == out[0].tolist()


def test_stop_words_end_generation(chat, ref):
    greedy = ref["chat"]["greedy_raw"][1:].tolist()  # 75 46 375 75 46 375 ...
    saved = chat.stopping_criteria
    chat.stopping_criteria = [StopOnTokens([greedy[1:3]])]
    try:
        _, conv, img_list = start(chat, ref)
        _, tokens = chat.answer(conv, img_list, max_new_tokens=12, do_sample=False)
    finally:
        chat.stopping_criteria = saved
    assert tokens.tolist() == greedy[:3]


def test_seed_makes_sampling_reproducible(chat, ref):
    answers = []
    for seed in (3, 3, 4):
        _, conv, img_list = start(chat, ref)
        answers.append(chat.answer(conv, img_list, max_new_tokens=12, seed=seed)[1].tolist())
    assert answers[0] == answers[1]
    assert answers[0] != answers[2]


def test_beam_search_and_top_p(chat, ref):
    _, conv, img_list = start(chat, ref)
    pieces = list(
        chat.stream_answer(conv, img_list, max_new_tokens=6, num_beams=2, do_sample=False)
    )
    assert len(pieces) == 1 and conv.messages[-1][1] == pieces[0]
    # top_p close to 0 keeps only the most likely token: sampling becomes greedy.
    _, conv, img_list = start(chat, ref)
    _, tokens = chat.answer(conv, img_list, max_new_tokens=12, top_p=1e-6, seed=0)
    assert tokens.tolist() == ref["chat"]["greedy_raw"][1:].tolist()


def test_image_count_must_match_placeholders(chat, ref):
    _, conv, img_list = start(chat, ref)
    with pytest.raises(ValueError, match="1 image placeholders but 2 images"):
        chat.answer(conv, img_list * 2, max_new_tokens=2)


def test_each_row_stops_on_its_own(chat, ref):
    """In a batch, a row that wrote a stop word ends (then padding); the others go on."""
    first = ref["chat"]["context_embs"].detach()
    other = torch.randn(first.shape, generator=torch.Generator().manual_seed(0)) * 0.05
    alone = chat.generate(other, max_new_tokens=12, do_sample=False)[0].tolist()
    greedy = ref["chat"]["greedy_raw"][1:].tolist()
    stop = greedy[1:3]
    assert stop != alone[1:3] and all(alone[i : i + 2] != stop for i in range(len(alone) - 1))
    saved = chat.stopping_criteria
    chat.stopping_criteria = [StopOnTokens([stop])]
    try:
        both = chat.generate(torch.cat([first, other]), max_new_tokens=12, do_sample=False)
    finally:
        chat.stopping_criteria = saved
    pad = chat.model.llama_tokenizer.pad_token_id
    assert both[0].tolist() == greedy[:3] + [pad] * 9
    assert both[1].tolist() == alone
    assert chat.decode_answer(both[0]) == chat.decode_answer(greedy[:3])


def test_two_images_in_one_conversation(chat, ref):
    """Each image message adds a placeholder; embeddings interleave text and images in order."""
    conv, img_list = CONV_VISION.copy(), []
    chat.upload_img(ref["images_eval_processed"][0], conv, img_list)
    chat.ask("First?", conv)
    chat.answer(conv, img_list, max_new_tokens=3, do_sample=False)
    chat.upload_img(ref["images_eval_processed"][1], conv, img_list)
    chat.ask("Second?", conv)
    conv.append_message(conv.roles[1], None)
    prompt = conv.get_prompt()
    assert prompt.count("<ImageHere>") == 2
    assert prompt.endswith("###Human: <Img><ImageHere></Img> Second?###Assistant:")
    embs = chat.get_context_emb(conv, img_list)

    tokenizer = chat.model.llama_tokenizer
    embed = chat.model.llama_model.get_input_embeddings()
    parts = prompt.split("<ImageHere>")
    ids = [tokenizer(p, add_special_tokens=(i == 0)).input_ids for i, p in enumerate(parts)]
    assert ids[0][0] == tokenizer.bos_token_id and tokenizer.bos_token_id not in ids[1] + ids[2]
    expected = torch.cat(
        [
            embed(torch.tensor([ids[0]])),
            ref["inputs_llama"][0:1],
            embed(torch.tensor([ids[1]])),
            ref["inputs_llama"][1:2],
            embed(torch.tensor([ids[2]])),
        ],
        dim=1,
    )
    torch.testing.assert_close(embs.detach(), expected.detach(), atol=1e-5, rtol=0)
