"""Chat against what the original computed (reference set ``chat.*``).

The model is the tiny reference MiniGPT-4 built through ``MiniGPT4.from_config`` (fp32, CPU), so
these tests pin the whole chat path: image embeddings, prompt, segment ids, context embeddings,
truncation, generation arguments, stop words, streaming and post-processing.
"""

from __future__ import annotations

import logging

import pytest
import torch

from minigpt4.conversation import Chat
from minigpt4.conversation.chat import TRUNCATION_WARNING
from minigpt4.conversation.stopping import criteria_of
from minigpt4.models.generation import GenerationSettings, StopRule
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
    conv, img_list = chat.new_conversation(), []
    msg = chat.upload_img(ref["images_eval_processed"][1], conv, img_list)
    chat.ask(QUESTION, conv)
    return msg, conv, img_list


def test_prompt_segments_and_context_embeddings(chat, ref):
    msg, conv, img_list = start(chat, ref)
    assert msg == ref["chat"]["upload_msg"]
    conv.append_message(conv.roles[1], None)
    prompt = conv.get_prompt()
    assert prompt == ref["chat"]["prompt"]
    assert chat.model.segment_ids(prompt) == ref["chat"]["seg_ids"]
    embs = chat.model.get_context_emb(prompt, img_list)
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
    pieces = list(chat.stream_text(conv, img_list, max_new_tokens=12, do_sample=False))
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


def with_stops(chat, sequences):
    """The chat with the original's stopping criteria of ``sequences`` (same end ids)."""
    other = Chat(chat.model, chat.vis_processor, "cpu", stopping_criteria=criteria_of(sequences))
    assert other.stop_rule == StopRule(sequences=sequences, end_ids=chat.stop_rule.end_ids)
    return other


def test_stop_words_end_generation(chat, ref):
    greedy = ref["chat"]["greedy_raw"][1:].tolist()  # 75 46 375 75 46 375 ...
    stopping = with_stops(chat, (tuple(greedy[1:3]),))
    _, conv, img_list = start(stopping, ref)
    _, tokens = stopping.answer(conv, img_list, max_new_tokens=12, do_sample=False)
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
    pieces = list(chat.stream_text(conv, img_list, max_new_tokens=6, num_beams=2, do_sample=False))
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
    """In a batch, a row that wrote a stop word ends; the others go on, with their own lengths."""
    first = ref["chat"]["context_embs"].detach()
    other = torch.randn(first.shape, generator=torch.Generator().manual_seed(0)) * 0.05
    greedy_settings = GenerationSettings(max_new_tokens=12, do_sample=False)
    (alone,) = chat.model.generate_from_embeddings([other], [greedy_settings], [chat.stop_rule])
    greedy = ref["chat"]["greedy_raw"][1:].tolist()
    stop = tuple(greedy[1:3])
    rule = StopRule(sequences=(stop,), end_ids=chat.stop_rule.end_ids)
    assert all(tuple(alone.tokens[i : i + 2]) != stop for i in range(len(alone.tokens) - 1))
    short = greedy_settings.replace(max_new_tokens=5)
    both = chat.model.generate_from_embeddings(
        [first, other, other], [greedy_settings, greedy_settings, short], [rule, rule, rule]
    )
    assert [r.tokens for r in both] == [greedy[:3], alone.tokens, alone.tokens[:5]]
    assert [r.finish_reason for r in both] == ["stop", alone.finish_reason, "length"]


def test_rows_of_different_lengths_equal_their_answers_alone(chat, ref):
    """Left padding: a batch of a short and a long context gives each row's own answer."""
    long = ref["chat"]["context_embs"].detach()
    short = long[:, 20:]
    settings = GenerationSettings(max_new_tokens=10, do_sample=False)
    alone = [
        chat.model.generate_from_embeddings([c], [settings], [chat.stop_rule])[0].tokens
        for c in (long, short)
    ]
    batched = chat.model.generate_from_embeddings(
        [long, short], [settings] * 2, [chat.stop_rule] * 2
    )
    assert [r.tokens for r in batched] == alone


def test_seeded_rows_do_not_depend_on_the_batch(chat, ref):
    first = ref["chat"]["context_embs"].detach()
    sampled = GenerationSettings(max_new_tokens=8, seed=11, temperature=1.5, top_p=1.0)
    greedy = sampled.replace(do_sample=False, seed=None)
    (alone,) = chat.model.generate_from_embeddings([first], [sampled], [chat.stop_rule])
    mixed = chat.model.generate_from_embeddings(
        [first, first], [greedy, sampled], [chat.stop_rule] * 2
    )
    assert mixed[1].tokens == alone.tokens
    assert mixed[0].tokens == ref["chat"]["greedy_raw"][1:9].tolist()


def test_two_images_in_one_conversation(chat, ref):
    """Each image message adds a placeholder; embeddings interleave text and images in order."""
    conv, img_list = chat.new_conversation(), []
    chat.upload_img(ref["images_eval_processed"][0], conv, img_list)
    chat.ask("First?", conv)
    chat.answer(conv, img_list, max_new_tokens=3, do_sample=False)
    chat.upload_img(ref["images_eval_processed"][1], conv, img_list)
    chat.ask("Second?", conv)
    conv.append_message(conv.roles[1], None)
    prompt = conv.get_prompt()
    assert prompt.count("<ImageHere>") == 2
    assert prompt.endswith("###Human: <Img><ImageHere></Img> Second?###Assistant:")
    embs = chat.model.get_context_emb(prompt, img_list)

    tokenizer = chat.model.llama_tokenizer
    embed = chat.model.llama_model.get_input_embeddings()
    parts = prompt.split("<ImageHere>")
    ids = [tokenizer.encode(p, add_bos=(i == 0)) for i, p in enumerate(parts)]
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


def test_overflow_says_what_the_truncation_cuts(chat, ref):
    _, conv, img_list = start(chat, ref)
    assert chat.overflow(conv, img_list) == 0
    assert chat.question_overflow("What is in the picture?", img_list) == 0
    room = 60 - 5
    length = chat.context_length(conv, img_list)
    assert chat.overflow(conv, img_list, chat.settings(max_length=60, max_new_tokens=5)) == (
        length - room
    )
    long_question = "What is in the picture? " * 400
    over = chat.question_overflow(long_question, img_list)
    probe = chat.new_conversation()
    chat.upload_img(ref["images_eval_processed"][1], probe, [])
    chat.ask(long_question, probe)
    assert over == chat.context_length(probe, img_list) - (2000 - 300) > 0
