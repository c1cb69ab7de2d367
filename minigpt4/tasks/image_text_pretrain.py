"""``image_text_pretrain``: caption-loss training; like the original, it has no evaluation."""

from __future__ import annotations

from minigpt4.common.registry import registry
from minigpt4.tasks.base_task import BaseTask


@registry.register_task("image_text_pretrain")
class ImageTextPretrainTask(BaseTask):
    """The training loss of :class:`BaseTask`, under the original's task name."""
