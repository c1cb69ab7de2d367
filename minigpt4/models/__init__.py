"""Models. Importing this package registers ``mini_gpt4`` (explicit import, no star imports)."""

from minigpt4.models.mini_gpt4 import MiniGPT4

__all__ = ["MiniGPT4"]
