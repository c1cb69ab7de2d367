"""MiniGPT-4 (LLaMA-2 Chat 7B): the original repository's second model, as its HEAD defines it.

Selected the way the original selects it: ``arch: minigpt4`` with ``model_type: pretrain_llama2``
(``minigpt4/configs/models/minigpt4_llama2.yaml``, which sets ``has_qformer: False``). It is
:class:`~minigpt4.models.mini_gpt4.MiniGPT4` with the HEAD code's defaults: the pad token is the
string ``$$`` (so an end-of-sequence ``</s>`` in the answer is a target), training prompts are cut
at 3800 embeddings, and ``low_resource`` only quantizes the LLM (the ViT stays on the GPU).
Its chat template (``CONV_VISION_LLama2``) is chosen from ``model_type`` by the chat.
"""

from __future__ import annotations

from typing import Any, ClassVar

from minigpt4.common.registry import registry
from minigpt4.models.mini_gpt4 import MiniGPT4


@registry.register_model("minigpt4")
class MiniGPT4Llama2(MiniGPT4):
    """MiniGPT-4 with a LLaMA-2 Chat LLM and no Q-Former (registry name ``minigpt4``)."""

    PRETRAINED_MODEL_CONFIG_DICT: ClassVar[dict[str, str]] = {
        "pretrain_llama2": "configs/models/minigpt4_llama2.yaml"
    }
    CONFIG_DEFAULTS: ClassVar[dict[str, Any]] = {
        "arch": "minigpt4",
        "model_type": "pretrain_llama2",
        "pad_token": "$$",
        "max_context_len": 3800,
    }
    CHECKPOINT_LOG = "Load MiniGPT-4 Checkpoint: %s"
    LOW_RESOURCE_VIT_ON_CPU = False
