"""Conversation template, prompt building and stop words (no model needed)."""

from __future__ import annotations

import pytest
import sentencepiece as spm
import torch

from minigpt4.conversation import (
    CONV_VISION,
    Chat,
    Conversation,
    SeparatorStyle,
    StopOnTokens,
    stop_word_ids,
)

SYSTEM = (
    "Give the following image: <Img>ImageContent</Img>. You will be able to see the image once "
    "I provide it to you. Please answer my questions."
)


@pytest.fixture(scope="module")
def tokenizer(reference_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(reference_dir / "tiny" / "llama")
    tok.pad_token = tok.eos_token
    return tok


@pytest.fixture(scope="module")
def sp(reference_dir):
    return spm.SentencePieceProcessor(
        model_file=str(reference_dir / "tiny" / "llama" / "tokenizer.model")
    )


def test_conv_vision_template():
    assert CONV_VISION.system == SYSTEM
    assert CONV_VISION.roles == ("Human", "Assistant")
    assert CONV_VISION.messages == []
    assert CONV_VISION.offset == 2
    assert CONV_VISION.sep_style == SeparatorStyle.SINGLE
    assert CONV_VISION.sep == "###"
    assert CONV_VISION.sep2 is None


def test_prompt_over_two_turns():
    conv = CONV_VISION.copy()
    conv.append_message("Human", "<Img><ImageHere></Img> What is it?")
    conv.append_message("Assistant", None)
    assert conv.get_prompt() == (
        SYSTEM + "###Human: <Img><ImageHere></Img> What is it?###Assistant:"
    )
    conv.messages[-1][1] = "A cat."
    conv.append_message("Human", "And the colour?")
    conv.append_message("Assistant", None)
    assert conv.get_prompt() == (
        SYSTEM
        + "###Human: <Img><ImageHere></Img> What is it?###Assistant: A cat."
        + "###Human: And the colour?###Assistant:"
    )


def test_two_separator_style_alternates():
    conv = Conversation("S", ("U", "A"), [], 0, SeparatorStyle.TWO, sep=" ", sep2="</s>")
    conv.append_message("U", "hi")
    conv.append_message("A", "yo")
    conv.append_message("U", None)
    assert conv.get_prompt() == "S U: hi A: yo</s>U:"


def test_copy_does_not_share_messages():
    conv = CONV_VISION.copy()
    conv.append_message("Human", "x")
    assert CONV_VISION.messages == []
    other = conv.copy()
    other.messages[0][1] = "changed"
    assert conv.messages[0][1] == "x"
    assert conv.to_gradio_chatbot() == []  # offset 2 skips the first two messages


def test_ask_joins_the_image_message(tokenizer):
    chat = Chat.__new__(Chat)  # ask() needs neither model nor processor
    conv = CONV_VISION.copy()
    conv.append_message("Human", "<Img><ImageHere></Img>")
    chat.ask("What is in the picture?", conv)
    assert conv.messages == [["Human", "<Img><ImageHere></Img> What is in the picture?"]]
    conv.append_message("Assistant", "noise")
    chat.ask("Sure?", conv)
    assert conv.messages[-1] == ["Human", "Sure?"]


def test_stop_word_ids_from_the_vocabulary(tokenizer, sp):
    ids = stop_word_ids(tokenizer)
    # "##" + "#" as pieces (the tiny vocabulary has no plain "###" piece) ...
    two_pieces = [sp.piece_to_id("##"), sp.piece_to_id("#")]
    assert sp.id_to_piece(two_pieces[0]) == "##" and sp.id_to_piece(two_pieces[1]) == "#"
    # ... and "###" on its own, as SentencePiece writes it ("▁###").
    alone = sp.encode("###")
    assert two_pieces in ids
    assert alone in ids
    assert all(sp.decode(s).strip() == "###" for s in ids)
    assert all(sp.unk_id() not in s for s in ids)


def test_stop_criterion_checks_every_row():
    crit = StopOnTokens([[7], [5, 6]])
    ids = torch.tensor([[1, 2, 7], [1, 5, 6], [1, 6, 5], [9, 9, 9]])
    assert crit(ids, None).tolist() == [True, True, False, False]
    assert crit(torch.tensor([[6]]), None).tolist() == [False]  # shorter than the stop


def test_answer_post_processing(tokenizer):
    chat = Chat.__new__(Chat)

    class _Model:
        llama_tokenizer = tokenizer
        llama_model = None

    chat.model = _Model()
    ids = tokenizer("Assistant: a red circle###Human: next", add_special_tokens=False).input_ids
    assert chat.decode_answer(ids) == "a red circle"
    # A trailing end-of-sequence token (or padding) is not part of the answer.
    assert chat.decode_answer(tokenizer("a cat", add_special_tokens=False).input_ids + [2, 2]) == (
        "a cat"
    )
