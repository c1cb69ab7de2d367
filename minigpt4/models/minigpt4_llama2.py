"""The original HEAD's ``minigpt4`` arch: MiniGPT-4 (LLaMA-2 Chat 7B), and Vicuna v0 again.

Selected the way the original selects it: ``arch: minigpt4`` with ``model_type: pretrain_llama2``
(``minigpt4/configs/models/minigpt4_llama2.yaml``, which sets ``has_qformer: False``) or
``pretrain_vicuna0`` (``minigpt4_vicuna0.yaml``: the Q-Former, HEAD's code default, as VLMEvalKit
uses it). It is :class:`~minigpt4.models.mini_gpt4.MiniGPT4` with the HEAD code's defaults: the
pad token is the string ``$$`` (so an end-of-sequence ``</s>`` in the answer is a target),
training prompts are cut at 3800 embeddings, and ``low_resource`` only quantizes the LLM (the ViT
stays on the GPU). Its chat template (``CONV_VISION_LLama2`` / ``CONV_VISION_Vicuna0``) is chosen
from ``model_type`` by the chat.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from minigpt4.common.registry import registry
from minigpt4.models.mini_gpt4 import MiniGPT4


@registry.register_model("minigpt4")
class MiniGPT4Llama2(MiniGPT4):
    """The original HEAD's MiniGPT-4 (registry name ``minigpt4``): LLaMA-2 Chat without the
    Q-Former, or Vicuna v0 with it."""

    PRETRAINED_MODEL_CONFIG_DICT: ClassVar[dict[str, str]] = {
        "pretrain_vicuna0": "configs/models/minigpt4_vicuna0.yaml",
        "pretrain_llama2": "configs/models/minigpt4_llama2.yaml",
    }
    CONFIG_DEFAULTS: ClassVar[dict[str, Any]] = {
        "arch": "minigpt4",
        "pad_token": "$$",
        "max_context_len": 3800,
    }
    CHECKPOINT_LOG = "Load MiniGPT-4 Checkpoint: %s"
    LOW_RESOURCE_VIT_ON_CPU = False

    @classmethod
    def default_model_type(cls, section: Mapping) -> str:
        """HEAD's code default is the Q-Former (``has_qformer: True``), the Vicuna v0 model; the
        grouping adapter (``has_qformer: False`` or ``image_adapter: group``) is LLaMA-2's."""
        grouped = section.get("image_adapter") == "group" or section.get("has_qformer") is False
        return "pretrain_llama2" if grouped else "pretrain_vicuna0"
