"""The original HEAD's import path for its ``minigpt4`` arch: ``from minigpt4.models.minigpt4
import MiniGPT4`` gives that class here too (:class:`~minigpt4.models.minigpt4_llama2.
MiniGPT4Llama2`, registered as ``minigpt4``). v1's ``MiniGPT4`` (``mini_gpt4``) stays at
``minigpt4.models.mini_gpt4``."""

from minigpt4.models.minigpt4_llama2 import MiniGPT4Llama2 as MiniGPT4

__all__ = ["MiniGPT4"]
