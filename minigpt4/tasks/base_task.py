"""A task builds the model and datasets from the config and owns the training step/epoch."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from minigpt4.common.logger import MetricLogger, SmoothedValue
from minigpt4.common.registry import registry
from minigpt4.datasets.data_utils import prepare_sample
from minigpt4.models.training_precision import TrainingPrecision

logger = logging.getLogger(__name__)


class BaseTask:
    """Training over ``iters_per_epoch`` batches per epoch; evaluation is task-specific."""

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
        return model(samples)["loss"]

    def valid_step(self, model: nn.Module, samples: dict[str, Any]) -> Any:
        raise NotImplementedError

    def evaluation(self, model: nn.Module, data_loader: Any, cuda_enabled: bool = True) -> Any:
        raise NotImplementedError

    def train_epoch(
        self,
        epoch: int,
        model: nn.Module,
        data_loader: Any,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: Any,
        iters_per_epoch: int,
        device: torch.device,
        log_freq: int,
        accum_grad_iters: int,
        scaler: torch.amp.GradScaler | None = None,
        precision: TrainingPrecision | None = None,
        start_iter: int = 0,
        start_meters: dict[str, Any] | None = None,
        on_step: Callable[[int, int, MetricLogger], None] | None = None,
    ) -> dict[str, str]:
        """Train ``iters_per_epoch`` iterations (from ``start_iter`` when resuming mid-epoch).

        The lr is set *before* each forward (the original's order). The loss is divided by
        ``accum_grad_iters`` so accumulated gradients are averages (the original summed them).
        ``precision`` gives the step's one autocast (none without it); ``scaler`` is the fp16
        GradScaler (None for bf16).
        ``on_step(epoch, i, metric_logger)`` runs after every optimizer step, with the stats
        of iterations up to ``i`` (periodic checkpoints save them); ``start_meters`` restores
        such stats, so a resumed epoch's averages cover the whole epoch.
        Returns the epoch's global averages formatted with 3 decimals, as log.txt wants them.
        """
        metric_logger = MetricLogger(delimiter="  ")
        metric_logger.add_meter("lr", SmoothedValue(window_size=1, fmt="{value:.6f}"))
        metric_logger.add_meter("loss", SmoothedValue(window_size=1, fmt="{value:.4f}"))
        if start_meters:
            metric_logger.load_state_dict(start_meters)
        logger.info("Start training epoch %d, %d iters per inner epoch.", epoch, iters_per_epoch)
        header = f"Train: data epoch: [{epoch}]"
        is_ddp = isinstance(model, nn.parallel.DistributedDataParallel)

        optimizer.zero_grad()
        batches = (next(data_loader) for _ in range(start_iter, iters_per_epoch))
        for i, samples in enumerate(
            metric_logger.log_every(
                batches, log_freq, header, start=start_iter, total=iters_per_epoch
            ),
            start=start_iter,
        ):
            samples = prepare_sample(samples, device)
            samples.update({"epoch": epoch, "num_iters_per_epoch": iters_per_epoch, "iters": i})
            lr_scheduler.step(cur_epoch=epoch, cur_step=i)

            step_now = (i + 1) % accum_grad_iters == 0
            # Skip the DDP gradient all-reduce on iterations that only accumulate.
            sync = contextlib.nullcontext() if step_now or not is_ddp else model.no_sync()
            with sync:
                autocast = precision.autocast_context() if precision else contextlib.nullcontext()
                with autocast:
                    loss = self.train_step(model=model, samples=samples)
                scaled = loss / accum_grad_iters
                if scaler is not None:
                    scaler.scale(scaled).backward()
                else:
                    scaled.backward()

            metric_logger.update(loss=loss.item())
            metric_logger.update(lr=optimizer.param_groups[0]["lr"])
            if step_now:
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad()
                if on_step is not None:
                    on_step(epoch, i, metric_logger)

        metric_logger.synchronize_between_processes()
        logger.info("Averaged stats: %s", metric_logger.global_avg())
        return {name: f"{meter.global_avg:.3f}" for name, meter in metric_logger.meters.items()}
