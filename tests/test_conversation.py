"""Conversation template, prompt building and stop words (no model needed)."""

from __future__ import annotations

import pytest
import sentencepiece as spm

from minigpt4.conversation import (
    CONV_VISION,
    Chat,
    CONV_VISION_LLama2,
    CONV_VISION_Vicuna0,
    Conversation,
    SeparatorStyle,
    chat_template,
    stop_word_ids,
)
from minigpt4.models.answer_text import AnswerDecoder
from minigpt4.models.generation import StopRule
from minigpt4.models.tokenizer import LlamaTokenizer

SYSTEM = (
    "Give the following image: <Img>ImageContent</Img>. You will be able to see the image once "
    "I provide it to you. Please answer my questions."
)


@pytest.fixture(scope="module")
def tokenizer(reference_dir):
    return LlamaTokenizer.from_folder(str(reference_dir / "tiny" / "llama"))


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


def test_llama2_template_over_two_turns():
    """The original's HEAD CONV_VISION_LLama2: roles carry their spacing, no separator."""
    assert chat_template("pretrain_llama2").conversation is CONV_VISION_LLama2
    assert chat_template("pretrain_vicuna").conversation is CONV_VISION
    conv = CONV_VISION_LLama2.copy()
    conv.append_message(conv.roles[0], "<Img><ImageHere></Img> What is it?")
    conv.append_message(conv.roles[1], None)
    assert conv.get_prompt() == SYSTEM + "<s>[INST] <Img><ImageHere></Img> What is it? [/INST] "
    conv.messages[-1][1] = "A cat."
    conv.append_message(conv.roles[0], "Sure?")
    conv.append_message(conv.roles[1], None)
    assert conv.get_prompt().endswith("[/INST] A cat.<s>[INST] Sure? [/INST] ")
    with pytest.raises(KeyError, match="pretrain_vicuna0"):
        chat_template("pretrain_vicuna_7b")


def test_head_vicuna0_template_over_two_turns():
    """The original HEAD's CONV_VISION_Vicuna0: roles "Human: " / "Assistant: " written as they
    are, so the open turn ends with "Assistant: " (v1's CONV_VISION ends "Assistant:")."""
    assert chat_template("pretrain_vicuna0").conversation is CONV_VISION_Vicuna0
    conv = CONV_VISION_Vicuna0.copy()
    conv.append_message(conv.roles[0], "<Img><ImageHere></Img> What is it?")
    conv.append_message(conv.roles[1], None)
    assert conv.get_prompt() == (
        SYSTEM + "###Human: <Img><ImageHere></Img> What is it?###Assistant: "
    )
    conv.messages[-1][1] = "A cat."
    conv.append_message(conv.roles[0], "Sure?")
    conv.append_message(conv.roles[1], None)
    assert conv.get_prompt().endswith("###Assistant: A cat.###Human: Sure?###Assistant: ")


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
    ids = stop_word_ids(tokenizer, "###")
    # "##" + "#" as pieces (the tiny vocabulary has no plain "###" piece) ...
    two_pieces = [sp.piece_to_id("##"), sp.piece_to_id("#")]
    assert sp.id_to_piece(two_pieces[0]) == "##" and sp.id_to_piece(two_pieces[1]) == "#"
    # ... and "###" on its own, as SentencePiece writes it ("▁###").
    alone = sp.encode("###")
    assert two_pieces in ids
    assert alone in ids
    assert all(sp.decode(s).strip() == "###" for s in ids)
    assert all(sp.unk_id() not in s for s in ids)


def test_stop_rule_checks_sequences_strings_and_end_ids(tokenizer):
    rule = StopRule(sequences=((7,), (5, 6)), strings=("cat",), end_ids=frozenset({2}))
    decode = tokenizer.decode
    assert [rule.stops(ids, decode) for ids in ([1, 7], [5, 6], [6, 5], [9, 2], [])] == [
        True,
        True,
        False,
        True,
        False,
    ]
    cat = tokenizer.encode("a black cat sat")
    assert rule.stops(cat, decode) and rule.first_stop(cat, decode) < len(cat)
    assert not rule.stops([6], decode)  # shorter than the stop sequence


def test_answer_post_processing(tokenizer):
    template = chat_template("pretrain_vicuna")
    decoder = AnswerDecoder(tokenizer, template, frozenset({tokenizer.eos_token_id}))
    ids = tokenizer.encode("Assistant: a red circle###Human: next")
    assert decoder.decode(ids) == "a red circle"
    # A trailing end-of-sequence token (or padding) is not part of the answer.
    assert decoder.decode(tokenizer.encode("a cat") + [2, 2]) == "a cat"
