"""MiniGPT-v2 (the original's registry name ``minigpt_v2``, class ``MiniGPTv2``).

EVA ViT-g at 448 px (the 224-px checkpoint's ``pos_embed`` interpolated at load), ``ln_vision``
fresh (no file holds it), 4 consecutive patch tokens per LLM token (``image_adapter: group``),
``llama_proj`` 4 x 1408 -> 4096, and LLaMA-2 Chat with LoRA on ``q_proj``/``v_proj``
(:mod:`minigpt4.models.lora`). It is :class:`~minigpt4.models.mini_gpt4.MiniGPT4` with the
original v2 code's defaults; its chat template is ``CONV_VISION_minigptv2``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from minigpt4.common.registry import registry
from minigpt4.models.mini_gpt4 import MiniGPT4


@registry.register_model("minigpt_v2")
class MiniGPTv2(MiniGPT4):
    """The original's MiniGPT-v2: grouped patch tokens and a LoRA-tuned LLaMA-2 Chat."""

    PRETRAINED_MODEL_CONFIG_DICT: ClassVar[dict[str, str]] = {
        "pretrain": "configs/models/minigpt_v2.yaml",
    }
    # The original MiniGPTv2.from_config's defaults.
    CONFIG_DEFAULTS: ClassVar[dict[str, Any]] = {
        "arch": "minigpt_v2",
        "model_type": "pretrain",
        "image_size": 448,
        "image_adapter": "group",
        "pad_token": "$$",
        "max_context_len": 3800,
        "max_txt_len": 300,
        "prompt_template": "[INST] {} [/INST]",
        "lora_r": 64,
        "lora_alpha": 16,
    }
    CHECKPOINT_LOG = "Load Minigpt-4-LLM Checkpoint: %s"
    LOW_RESOURCE_VIT_ON_CPU = False

    @classmethod
    def default_model_type(cls, section: Mapping) -> str:
        return "pretrain"
