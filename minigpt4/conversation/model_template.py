"""Which chat template a model gets: a template the project knows, or its tokenizer's own.

``model.chat_template`` in the config decides: unset, the template of ``model.model_type``
(the original's rule: ``CONV_VISION`` for v1, ...); a known name, that template; ``tokenizer``,
the LLM tokenizer's own chat template (``tokenizer.apply_chat_template``: Llama-3, Qwen2.5,
Mistral, ... each formats its turns its own way). Either way the user's turn holds the image
message ``<Img><ImageHere></Img>`` in its text, so the model splits the prompt at the
placeholder as it always does. ``model.stop_words`` are added to the template's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from minigpt4.conversation.templates import CONV_VISION, ChatTemplate, Conversation, chat_template
from minigpt4.models.model_config import TOKENIZER_CHAT_TEMPLATE

USER_ROLE, ASSISTANT_ROLE = "user", "assistant"

Render = Callable[[list[dict[str, str]], bool], str]


@dataclasses.dataclass
class TokenizerConversation(Conversation):
    """A conversation whose prompt the tokenizer's chat template writes.

    ``render(messages, add_generation_prompt)`` is the tokenizer's ``chat_prompt``. A leading
    ``bos_token`` in the rendered text is removed: the model puts the BOS token before the
    prompt itself. ``system`` "" leaves the system turn to the template (some write a default
    one, e.g. Qwen's).
    """

    render: Render | None = None
    bos_token: str | None = None

    def get_prompt(self) -> str:
        messages = [{"role": "system", "content": self.system}] if self.system else []
        open_turn = False
        for role, message in self.messages:
            if message:
                messages.append({"role": role, "content": message})
            else:
                open_turn = True  # the turn the model answers next
        prompt = self.render(messages, open_turn)
        if self.bos_token and prompt.startswith(self.bos_token):
            prompt = prompt[len(self.bos_token) :]
        return prompt


def tokenizer_chat_template(tokenizer: Any, stop_words: tuple[str, ...] = ()) -> ChatTemplate:
    """A :class:`ChatTemplate` that formats with ``tokenizer``'s own chat template; answers
    are decoded without special tokens and end at the end-of-sequence ids or ``stop_words``."""
    conversation = TokenizerConversation(
        system="",
        roles=(USER_ROLE, ASSISTANT_ROLE),
        messages=[],
        offset=CONV_VISION.offset,
        sep="",
        render=tokenizer.chat_prompt,
        bos_token=tokenizer.bos_token,
    )
    return ChatTemplate(
        conversation, stop_words=stop_words, skip_special_tokens=True, answer_after=None
    )


def template_for(model: Any) -> ChatTemplate:
    """The chat template of ``model`` by its config (see the module docstring)."""
    config = model.config
    name = getattr(config, "chat_template", None) or config.model_type
    extra = tuple(getattr(config, "stop_words", ()))
    if name == TOKENIZER_CHAT_TEMPLATE:
        return tokenizer_chat_template(model.llama_tokenizer, extra)
    template = chat_template(name)
    if not extra:
        return template
    words = template.stop_words + tuple(w for w in extra if w not in template.stop_words)
    return dataclasses.replace(template, stop_words=words)
