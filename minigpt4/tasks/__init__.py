"""Tasks; importing this package registers ``image_text_pretrain``."""

from typing import Any

from minigpt4.common.registry import registry
from minigpt4.common.run_config import RunConfig
from minigpt4.tasks.base_task import BaseTask
from minigpt4.tasks.image_text_pretrain import ImageTextPretrainTask


def setup_task(cfg: Any) -> BaseTask:
    """The task named by ``run.task``."""
    task_name = RunConfig.from_node(cfg.run_cfg, training=True).task
    return registry.get_task_class(task_name).setup_task(cfg=cfg)


__all__ = ["BaseTask", "ImageTextPretrainTask", "setup_task"]
