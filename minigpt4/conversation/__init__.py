"""Conversation templates and the ``Chat`` used by the demo, the batch command and the tools."""

from minigpt4.conversation.chat import Chat, stop_word_ids
from minigpt4.conversation.stopping import StoppingCriteriaSub
from minigpt4.conversation.templates import (
    CONV_VISION,
    ChatTemplate,
    CONV_VISION_LLama2,
    CONV_VISION_minigptv2,
    CONV_VISION_Vicuna0,
    Conversation,
    SeparatorStyle,
    chat_template,
)

__all__ = [
    "CONV_VISION",
    "CONV_VISION_LLama2",
    "CONV_VISION_Vicuna0",
    "CONV_VISION_minigptv2",
    "Chat",
    "ChatTemplate",
    "Conversation",
    "SeparatorStyle",
    "StoppingCriteriaSub",
    "chat_template",
    "stop_word_ids",
]
