"""A task builds the model and datasets from the config and computes the loss of a batch.

Everything around that step (placement, the loop, accumulation, checkpoints) is the runner's
recipe, ``minigpt4/runners/runner_base.py``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from minigpt4.common.registry import registry


class BaseTask:
    """Model, datasets and the training loss (no task here evaluates during training: LAVIS's
    ``valid_step`` / ``evaluation`` hooks are not kept)."""

    @classmethod
    def setup_task(cls, **kwargs: Any) -> BaseTask:
        return cls()

    def build_model(self, cfg: Any) -> nn.Module:
        model_config = cfg.model_cfg
        model_cls = registry.get_model_class(model_config.arch)
        return model_cls.from_config(model_config)

    def build_datasets(self, cfg: Any) -> dict[str, dict[str, Any]]:
        """``{dataset name: {"train": dataset}}`` with ``.name`` and ``.sample_ratio`` set."""
        datasets_config = cfg.datasets_cfg
        if not datasets_config:
            raise ValueError("At least one dataset has to be specified under 'datasets'.")
        datasets = {}
        for name in datasets_config:
            dataset_config = datasets_config[name]
            builder = registry.get_builder_class(name)(dataset_config, name=name)
            dataset = builder.build_datasets()
            dataset["train"].name = name
            if "sample_ratio" in dataset_config:
                dataset["train"].sample_ratio = dataset_config.sample_ratio
            datasets[name] = dataset
        return datasets

    def train_step(self, model: nn.Module, samples: dict[str, Any]) -> torch.Tensor:
        """The loss of one batch (the runner divides it for accumulation and backpropagates)."""
        return model(samples)["loss"]
