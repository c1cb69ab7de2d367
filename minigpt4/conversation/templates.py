"""Conversation templates: how the messages of a chat become one prompt string.

The strings, roles and separators are the original's (what the released ``llama_proj`` weights
were trained against): ``CONV_VISION`` for MiniGPT-4 v1 (Vicuna, ``###Human: ...###Assistant:``);
from the original's HEAD, ``CONV_VISION_Vicuna0`` (the same model, roles that carry their own
": ", so the open turn ends ``Assistant: `` with a space), ``CONV_VISION_LLama2`` for the LLaMA-2
Chat model (``<s>[INST] ... [/INST] ``) and ``CONV_VISION_minigptv2``. A :class:`ChatTemplate`
adds what else a chat needs per model type (default generation settings, stop words, decoding);
:func:`chat_template` picks it from ``model_type``, as the original's demo picks its
conversation.
"""

from __future__ import annotations

import dataclasses
from enum import Enum, auto
from typing import Any

from minigpt4.models.generation import GenerationSettings
from minigpt4.models.prompt import IMAGE_PLACEHOLDER

IMAGE_MESSAGE = f"<Img>{IMAGE_PLACEHOLDER}</Img>"
SYSTEM_VISION = (
    "Give the following image: <Img>ImageContent</Img>. "
    "You will be able to see the image once I provide it to you. Please answer my questions."
)
STOP_WORD = "###"


class SeparatorStyle(Enum):
    """How messages are joined into one prompt string."""

    SINGLE = auto()
    TWO = auto()


@dataclasses.dataclass
class Conversation:
    """A conversation: system text, two roles and the messages exchanged so far.

    A message is written ``role + role_suffix + text + sep``; an open message (text None, the
    turn the model is about to answer) ends the prompt with ``role + role_suffix`` stripped on
    the right. v1 joins with ``": "`` ("Human: hi###", then "Assistant:"); the LLaMA-2 template's
    roles carry their own spacing (``role_suffix`` "").
    """

    system: str
    roles: tuple[str, str]
    messages: list[list[str | None]]
    offset: int
    sep_style: SeparatorStyle = SeparatorStyle.SINGLE
    sep: str = "###"
    sep2: str | None = None
    skip_next: bool = False
    conv_id: Any = None
    role_suffix: str = ": "  # last, so the original's positional arguments keep their places

    def get_prompt(self) -> str:
        """The prompt text of the messages so far."""
        if self.sep_style == SeparatorStyle.SINGLE:
            seps = [self.sep, self.sep]
        elif self.sep_style == SeparatorStyle.TWO:
            seps = [self.sep, self.sep2]
        else:
            raise ValueError(f"Invalid style: {self.sep_style}")
        ret = self.system + seps[0]
        for i, (role, message) in enumerate(self.messages):
            if message:
                ret += role + self.role_suffix + message + seps[i % 2]
            else:
                ret += role + self.role_suffix.rstrip()
        return ret

    def append_message(self, role: str, message: str | None) -> None:
        self.messages.append([role, message])

    def to_gradio_chatbot(self) -> list[list[str | None]]:
        """Messages after ``offset`` as [user, assistant] pairs."""
        ret: list[list[str | None]] = []
        for i, (_, msg) in enumerate(self.messages[self.offset :]):
            if i % 2 == 0:
                ret.append([msg, None])
            else:
                ret[-1][-1] = msg
        return ret

    def copy(self) -> Conversation:
        return dataclasses.replace(
            self, messages=[[role, msg] for role, msg in self.messages], skip_next=False
        )


CONV_VISION = Conversation(
    system=SYSTEM_VISION,
    roles=("Human", "Assistant"),
    messages=[],
    offset=2,
    sep_style=SeparatorStyle.SINGLE,
    sep="###",
)

# The original HEAD's templates: its Conversation wrote ``role + message + sep`` (role_suffix "").
CONV_VISION_Vicuna0 = Conversation(  # the original's names
    system=SYSTEM_VISION,
    roles=("Human: ", "Assistant: "),
    messages=[],
    offset=2,
    sep_style=SeparatorStyle.SINGLE,
    sep="###",
    role_suffix="",
)

CONV_VISION_LLama2 = Conversation(
    system=SYSTEM_VISION,
    roles=("<s>[INST] ", " [/INST] "),
    messages=[],
    offset=2,
    sep_style=SeparatorStyle.SINGLE,
    sep="",
    role_suffix="",
)

CONV_VISION_minigptv2 = Conversation(
    system="",
    roles=("<s>[INST] ", " [/INST]"),
    messages=[],
    offset=2,
    sep_style=SeparatorStyle.SINGLE,
    sep="",
    role_suffix="",
)


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    """Everything model-type specific about chatting with a model.

    ``settings``: the original ``Chat.answer``'s defaults for this model; ``stop_words``: text
    that ends an answer (and where its decoded text is cut); ``skip_special_tokens``: how
    answers are decoded; ``answer_after``: the original's post-processing keeps the text after
    the last occurrence of this string (None: the whole answer).
    """

    conversation: Conversation
    settings: GenerationSettings = GenerationSettings()
    stop_words: tuple[str, ...] = (STOP_WORD,)
    skip_special_tokens: bool = False
    answer_after: str | None = "Assistant:"


# The original HEAD's Chat: repetition penalty 1.05, special tokens skipped when decoding.
HEAD_SETTINGS = GenerationSettings(repetition_penalty=1.05)

CHAT_TEMPLATES = {
    "pretrain_vicuna": ChatTemplate(CONV_VISION),
    "pretrain_vicuna0": ChatTemplate(
        CONV_VISION_Vicuna0, settings=HEAD_SETTINGS, skip_special_tokens=True
    ),
    "pretrain_llama2": ChatTemplate(
        CONV_VISION_LLama2, settings=HEAD_SETTINGS, skip_special_tokens=True
    ),
    # MiniGPT-v2 (its model_type is "pretrain"; "minigptv2" names the template in a config)
    "pretrain": ChatTemplate(
        CONV_VISION_minigptv2, settings=HEAD_SETTINGS, skip_special_tokens=True
    ),
}
CHAT_TEMPLATES["minigptv2"] = CHAT_TEMPLATES["pretrain"]


def chat_template(model_type: str) -> ChatTemplate:
    """The chat template of ``model_type`` (``pretrain_vicuna``, ``pretrain_vicuna0``,
    ``pretrain_llama2``, ``pretrain`` for MiniGPT-v2)."""
    if model_type not in CHAT_TEMPLATES:
        raise KeyError(
            f"no chat template for model_type '{model_type}'; known: {sorted(CHAT_TEMPLATES)}"
        )
    return CHAT_TEMPLATES[model_type]
