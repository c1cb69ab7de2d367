"""The original's import path: ``from minigpt4.conversation.conversation import Chat, ...``.

In the original one file held the templates, the stopping criterion and the Chat; here they
live in :mod:`~minigpt4.conversation.templates`, :mod:`~minigpt4.conversation.stopping` and
:mod:`~minigpt4.conversation.chat`, and this module gathers them under the old name so that
scripts written for the original (its demos, VLMEvalKit, papers' evaluation code) import them
unchanged.
"""

from minigpt4.conversation.chat import Chat
from minigpt4.conversation.stopping import StoppingCriteriaSub
from minigpt4.conversation.templates import (
    CONV_VISION,
    CONV_VISION_LLama2,
    CONV_VISION_minigptv2,
    CONV_VISION_Vicuna0,
    Conversation,
    SeparatorStyle,
)

__all__ = [
    "CONV_VISION",
    "CONV_VISION_LLama2",
    "CONV_VISION_Vicuna0",
    "CONV_VISION_minigptv2",
    "Chat",
    "Conversation",
    "SeparatorStyle",
    "StoppingCriteriaSub",
]
