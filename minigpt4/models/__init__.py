"""Models. Importing this package registers ``mini_gpt4`` (MiniGPT-4 v1, Vicuna) and ``minigpt4``
(MiniGPT-4 LLaMA-2 Chat) and ``minigpt_v2`` (MiniGPT-v2), explicitly (no star imports)."""

from minigpt4.models.mini_gpt4 import MiniGPT4
from minigpt4.models.minigpt4_llama2 import MiniGPT4Llama2
from minigpt4.models.minigpt_v2 import MiniGPTv2

__all__ = ["MiniGPT4", "MiniGPT4Llama2", "MiniGPTv2"]
