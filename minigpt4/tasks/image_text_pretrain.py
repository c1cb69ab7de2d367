"""``image_text_pretrain``: caption-loss training; like the original, it has no evaluation."""

from __future__ import annotations

from typing import Any

from torch import nn

from minigpt4.common.registry import registry
from minigpt4.tasks.base_task import BaseTask


@registry.register_task("image_text_pretrain")
class ImageTextPretrainTask(BaseTask):
    def evaluation(self, model: nn.Module, data_loader: Any, cuda_enabled: bool = True) -> None:
        """No evaluation during MiniGPT-4 training (the original's returns None too)."""
        return None
