"""The server builds exactly the Chat's conversation (prompt string and context embeddings).

For both model variants (the v1 tiny reference model and the LLaMA-2 tiny model), a 1-, 2- and
3-turn conversation is held with the demo's ``Chat`` (upload, ask, answer, ask, ...) and then sent
to the API as OpenAI messages (the image in the first user message, the Chat's answers as
assistant messages). What reaches the model is recorded on both paths: the prompt given to
``get_context_emb`` and the context embeddings given to ``generate``; they must be equal, and
so must the greedy answers and ``usage.prompt_tokens`` (``chat.context_length``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from omegaconf import OmegaConf
from PIL import Image

from minigpt4.conversation import Chat
from minigpt4.serve import create_app
from tests.model_fixtures import llama2_config, tiny_model_config
from tests.serve_helpers import LOCAL, conversation, data_url, user_with_image

QUESTIONS = ["What is in the picture?", "What colour is it?", "Where is it?"]
MAX_TOKENS = 6


def v1_chat() -> Chat:
    import minigpt4  # noqa: F401  (registers the model and processors)
    from minigpt4.common.registry import registry

    model = registry.get_model_class("mini_gpt4").from_config(tiny_model_config(stage=2))
    processor_cls = registry.get_processor_class("blip2_image_eval")
    processor = processor_cls.from_config(OmegaConf.create({"image_size": 224}))
    return Chat(model.eval(), processor, device="cpu")


def llama2_chat() -> Chat:
    import minigpt4  # noqa: F401
    from minigpt4.conversation.loading import build_chat

    return build_chat(llama2_config("eval"), "cpu")


class Recorder:
    """Wraps the model's ``get_context_emb`` and ``generate_from_embeddings``: for each answer
    generated, the prompt last given to ``get_context_emb`` and the context embeddings given to
    ``generate_from_embeddings``."""

    def __init__(self, model, monkeypatch) -> None:
        self.prompts: list[str] = []
        self.contexts: list[torch.Tensor] = []
        self._last_prompt: str | None = None
        get_context_emb, generate = model.get_context_emb, model.generate_from_embeddings

        def recording_context(prompt, img_list):
            self._last_prompt = prompt
            return get_context_emb(prompt, img_list)

        def recording_generate(contexts, settings, rules, on_token=None, extra=()):
            assert len(contexts) == 1, "one answer at a time here"
            self.prompts.append(self._last_prompt)
            self.contexts.append(contexts[0].detach().clone())
            return generate(contexts, settings, rules, on_token=on_token, extra=extra)

        monkeypatch.setattr(model, "get_context_emb", recording_context)
        monkeypatch.setattr(model, "generate_from_embeddings", recording_generate)

    def take(self) -> tuple[list[str], list[torch.Tensor]]:
        out = (self.prompts, self.contexts)
        self.prompts, self.contexts = [], []
        return out


@pytest.fixture(scope="module", params=["v1", "llama2"])
def chat(request) -> Chat:
    return v1_chat() if request.param == "v1" else llama2_chat()


@pytest.fixture(scope="module")
def image() -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, (200, 260, 3), dtype=np.uint8))


def chat_turns(chat: Chat, image: Image.Image, turns: int) -> tuple[list[str], list[int]]:
    """The demo's conversation through the Chat: answers and, before each, the context length."""
    conv, img_list = chat.new_conversation(), []
    chat.upload_img(image, conv, img_list)
    answers, lengths = [], []
    for question in QUESTIONS[:turns]:
        chat.ask(question, conv)
        lengths.append(chat.context_length(conv, img_list))
        answers.append(chat.answer(conv, img_list, max_new_tokens=MAX_TOKENS, do_sample=False)[0])
    return answers, lengths


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_conversation_equals_the_chats(chat, image, turns, monkeypatch):
    recorder = Recorder(chat.model, monkeypatch)
    answers, lengths = chat_turns(chat, image, turns)
    chat_prompts, chat_contexts = recorder.take()
    assert len(chat_prompts) == len(chat_contexts) == turns

    url = data_url(image)
    with TestClient(create_app(chat, "tiny"), base_url=LOCAL) as client:
        for n in range(1, turns + 1):
            messages = conversation(url, QUESTIONS[:n], answers[: n - 1])
            body = {"messages": messages, "temperature": 0, "max_tokens": MAX_TOKENS}
            resp = client.post("/v1/chat/completions", json=body)
            assert resp.status_code == 200, resp.text
            out = resp.json()
            assert out["choices"][0]["message"]["content"] == answers[n - 1]
            assert out["usage"]["prompt_tokens"] == lengths[n - 1]
            prompts, contexts = recorder.take()
            assert prompts == [chat_prompts[n - 1]]
            assert len(contexts) == 1
            assert torch.equal(contexts[0], chat_contexts[n - 1])
    if turns == 3:  # the prompt holds every turn, in the template of the model
        assert all(q in chat_prompts[-1] for q in QUESTIONS)
        assert all(a in chat_prompts[-1] for a in answers[:2])


def test_system_message_replaces_the_system_text(chat, image, monkeypatch):
    recorder = Recorder(chat.model, monkeypatch)
    system = "You are a careful observer."
    messages = [{"role": "system", "content": system}, user_with_image(data_url(image), "Hi?")]
    with TestClient(create_app(chat, "tiny"), base_url=LOCAL) as client:
        resp = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 2})
    assert resp.status_code == 200, resp.text
    (prompt,) = recorder.take()[0]
    conv = chat.new_conversation()
    assert conv.system not in prompt
    assert prompt.startswith(system)


def test_image_in_a_later_turn_is_uploaded_as_the_chat_does(chat, image, monkeypatch):
    recorder = Recorder(chat.model, monkeypatch)
    second = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    conv, img_list = chat.new_conversation(), []
    chat.upload_img(image, conv, img_list)
    chat.ask(QUESTIONS[0], conv)
    first_answer, _ = chat.answer(conv, img_list, max_new_tokens=MAX_TOKENS, do_sample=False)
    chat.upload_img(second, conv, img_list)
    chat.ask(QUESTIONS[1], conv)
    chat.answer(conv, img_list, max_new_tokens=MAX_TOKENS, do_sample=False)
    chat_prompts, chat_contexts = recorder.take()

    messages = [
        user_with_image(data_url(image), QUESTIONS[0]),
        {"role": "assistant", "content": first_answer},
        user_with_image(data_url(second), QUESTIONS[1]),
    ]
    with TestClient(create_app(chat, "tiny"), base_url=LOCAL) as client:
        body = {"messages": messages, "temperature": 0, "max_tokens": MAX_TOKENS}
        assert client.post("/v1/chat/completions", json=body).status_code == 200
    prompts, contexts = recorder.take()
    assert prompts == chat_prompts[1:]
    assert chat_prompts[1].count("<ImageHere>") == 2
    # The server encodes both images in one vision-encoder call, the Chat one at a time: the
    # same numbers up to the rounding of a batched matmul.
    torch.testing.assert_close(contexts[0], chat_contexts[1], atol=1e-6, rtol=0)
