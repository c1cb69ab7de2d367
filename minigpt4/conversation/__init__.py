"""Conversation template (``CONV_VISION``) and the ``Chat`` used by the demo and batch inference."""

from minigpt4.conversation.conversation import (
    CONV_VISION,
    Chat,
    Conversation,
    SeparatorStyle,
    StopOnTokens,
    stop_word_ids,
)

__all__ = ["CONV_VISION", "Chat", "Conversation", "SeparatorStyle", "StopOnTokens", "stop_word_ids"]
