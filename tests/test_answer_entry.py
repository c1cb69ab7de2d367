"""The model's one answer entry (``model.answer`` / ``model.answer_batch``) on the tiny-world model:
it answers as the Chat does, streams growing text, counts a context without embedding it, fits
or refuses a long one, fails a bad row alone; one demo turn embeds its context once."""

from __future__ import annotations

import pytest
import torch

from minigpt4.conversation.templates import IMAGE_MESSAGE
from minigpt4.models.answering import ContextTooLong, Question, fit
from tiny_world import evaluate, text

TINY_EVAL = "eval_configs/minigpt4_tiny_eval.yaml"


@pytest.fixture(scope="module")
def chat():
    torch.set_num_threads(1)
    return evaluate.build_chat(TINY_EVAL)


@pytest.fixture(scope="module")
def images(chat):
    return [image for _, image in evaluate.held_out_images(evaluate.HELD_OUT_SEED, 3)]


def asked(chat, question: str = text.DEMO_QUESTION):
    conv = chat.new_conversation()
    conv.append_message(conv.roles[0], IMAGE_MESSAGE)
    chat.ask(question, conv)
    return conv


class Counts:
    """How often the model encodes images and embeds a context."""

    def __init__(self, model, monkeypatch) -> None:
        self.encode = self.context = 0
        encode_img, get_context_emb = model.encode_img, model.get_context_emb

        def counting_encode(*args, **kwargs):
            self.encode += 1
            return encode_img(*args, **kwargs)

        def counting_context(*args, **kwargs):
            self.context += 1
            return get_context_emb(*args, **kwargs)

        monkeypatch.setattr(model, "encode_img", counting_encode)
        monkeypatch.setattr(model, "get_context_emb", counting_context)


def test_model_answer_is_the_chats_answer(chat, images):
    settings = chat.settings(do_sample=False, max_new_tokens=40)
    conv, img_list = chat.new_conversation(), []
    chat.upload_img(images[0], conv, img_list)
    chat.ask(text.DEMO_QUESTION, conv)
    expected, tokens = chat.answer(conv.copy(), img_list, settings)
    pixels = chat.process_image(images[0])
    own = asked(chat)
    answer = chat.model.answer(own, [pixels], settings)
    assert answer.text == expected and answer.tokens == tokens.tolist()
    assert own.messages[-1] == [own.roles[1], expected]  # stored in the conversation
    assert answer.context_length == chat.context_length(asked(chat), [pixels])
    assert answer.finish_reason in ("stop", "length")


def test_model_stream_grows_to_the_answer(chat, images):
    settings = chat.settings(do_sample=False, max_new_tokens=40)
    pixels = [chat.process_image(images[1])]
    final = chat.model.answer(asked(chat), pixels, settings).text
    texts = list(chat.model.answer(asked(chat), pixels, settings, stream=True))
    assert len(texts) > 1 and texts[-1] == final
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))


def test_context_length_is_counted_as_embedded(chat, images, monkeypatch):
    pixels = [chat.process_image(images[0])]
    conv = asked(chat, "What colour is the large shape on the left?")
    counts = Counts(chat.model, monkeypatch)
    length = chat.context_length(conv, pixels)
    assert (counts.encode, counts.context) == (0, 0)  # counted, not embedded
    assert conv.messages[-1][0] == conv.roles[0]  # the conversation is left as it was
    opened = conv.copy()
    opened.append_message(opened.roles[1], None)
    with torch.no_grad():
        image_emb = chat.model.encode_img(pixels[0])[0]
        embedded = chat.model.get_context_emb(opened.get_prompt(), [image_emb])
    assert length == embedded.shape[1]


def test_fit_keeps_room_or_refuses(chat):
    base = chat.settings(max_length=100, max_new_tokens=30)
    assert fit(50, base).max_new_tokens == 30
    assert fit(80, base).max_new_tokens == 20  # what room is left
    assert fit(80, base, asked=20).max_new_tokens == 20
    with pytest.raises(ContextTooLong) as info:
        fit(80, base, asked=21)
    assert (info.value.asked, info.value.room) == (21, 20)
    with pytest.raises(ContextTooLong, match="the context is 100 tokens"):
        fit(100, base)


def test_a_long_context_is_cut_on_the_left(chat, images, caplog):
    from minigpt4.models.answering import TRUNCATION_WARNING

    pixels = [chat.process_image(images[0])]
    length = chat.context_length(asked(chat), pixels)
    settings = chat.settings(do_sample=False, max_new_tokens=5, max_length=length)
    answer = chat.model.answer(asked(chat), pixels, settings)
    assert TRUNCATION_WARNING in caplog.text and answer.context_length == length


def test_a_bad_row_fails_alone_in_a_batch(chat, images):
    settings = chat.settings(do_sample=False, max_new_tokens=10)
    pixels = [chat.process_image(im) for im in images[:2]]
    wrong = asked(chat)
    wrong.messages[-1][1] += IMAGE_MESSAGE  # two placeholders, one image
    rows = [Question(wrong, pixels[:1], settings), Question(asked(chat), pixels[1:], settings)]
    failed, ok = chat.model.answer_batch(rows)
    assert isinstance(failed, ValueError) and "placeholders" in str(failed)
    assert ok.text == chat.model.answer(asked(chat), pixels[1:], settings).text


def test_an_image_of_another_shape_is_refused_clearly(chat, images):
    settings = chat.settings(do_sample=False, max_new_tokens=5)
    unbatched = chat.process_image(images[0])[0]  # [3, H, W]
    with pytest.raises(ValueError, match=r"\[1, 3, H, W\].*got \(3, 112, 112\)"):
        chat.model.answer(asked(chat), [unbatched], settings)


def test_stop_strings_end_the_answer_and_are_left_out(chat, images):
    settings = chat.settings(do_sample=False, max_new_tokens=40)
    pixels = [chat.process_image(images[0])]
    full = chat.model.answer(asked(chat), pixels, settings)
    word = full.text.split()[2]
    rows = [Question(asked(chat), pixels, settings, stop=(word,))]
    (cut,) = chat.model.answer_batch(rows)
    assert cut.text == full.text[: full.text.index(word)].strip()
    assert len(cut.tokens) < len(full.tokens)


def test_one_demo_turn_embeds_its_context_once(chat, images, tmp_path, monkeypatch):
    import demo

    path = tmp_path / "image.png"
    images[0].save(path)
    handlers = {f.api_name: f.fn for f in demo.build_demo(chat, seed=0).fns.values()}
    counts = Counts(chat.model, monkeypatch)
    *_, state, img_list = handlers["upload"]({"path": str(path)}, "", None)
    assert (counts.encode, counts.context) == (1, 0)  # the upload encodes the image
    history: list = []
    for question in (text.DEMO_QUESTION, text.FOLLOW_UPS[0][0]):
        _, history, state = handlers["ask"](question, history, state, img_list)
        *_, (history, state, img_list) = handlers["answer"](history, state, img_list, 1, 1.0)
        assert history[-1]["role"] == "assistant" and history[-1]["content"]
    assert (counts.encode, counts.context) == (1, 2)  # one context per turn, nothing re-encoded
