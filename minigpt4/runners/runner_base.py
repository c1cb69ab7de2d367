"""``runner_base``: the training loop's periphery.

Builds the loaders, optimizer, lr scheduler and grad scaler from ``run``, wraps the model in
DDP, runs the epochs, and writes ``output_dir/<job_id>/``: ``log.txt`` (the config as JSON,
then one stats line per epoch), ``config.yaml`` (the resolved config) and
``checkpoint_{epoch}.pth``. Only rank 0 writes.

A checkpoint holds the original's keys, ``model`` (trainable parameters and all buffers),
``optimizer``, ``config``, ``scaler``, ``epoch``, so the original's loaders read it, plus what an
exact resume needs: ``lr_scheduler``, ``train_state`` (where to continue) and ``rank_states``
(every rank's RNG states and data position). Everything is plain containers and tensors:
``torch.load(path, weights_only=True)`` reads it.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import random
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import webdataset as wds
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import ChainDataset, DataLoader, IterableDataset

from minigpt4.common import dist_utils
from minigpt4.common.checkpoint_files import (
    CheckpointError,
    atomic_torch_save,
    atomic_write_text,
    read_checkpoint,
    remove_stale_temp_files,
)
from minigpt4.common.registry import registry
from minigpt4.common.run_config import RunConfig
from minigpt4.common.utils import resolve_path
from minigpt4.datasets.datasets.dataloader_utils import (
    IterLoader,
    MultiIterLoader,
    ResumableDistributedSampler,
    SeededSamples,
    StreamLoader,
)
from minigpt4.datasets.sample_seeds import mix_seed
from minigpt4.models.training_precision import prepare_for_training
from minigpt4.models.weights import training_checkpoint_state
from minigpt4.runners.resume import (
    RESUME_KEY,
    RESUME_REQUIRED,
    check_not_finished,
    resume_position,
)

logger = logging.getLogger(__name__)

# The original's iters_per_epoch when neither the config nor the loader gives one.
FALLBACK_ITERS_PER_EPOCH = 10000
ITER_CHECKPOINT_NAME = "checkpoint_latest.pth"


def _python_rng_state() -> dict[str, Any]:
    version, state, gauss = random.getstate()
    return {"version": version, "state": torch.tensor(state, dtype=torch.int64), "gauss": gauss}


def _set_python_rng_state(saved: dict[str, Any]) -> None:
    random.setstate((saved["version"], tuple(saved["state"].tolist()), saved["gauss"]))


def _numpy_rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _set_numpy_rng_state(saved: dict[str, Any]) -> None:
    np.random.set_state(
        (
            saved["name"],
            saved["keys"].numpy().astype(np.uint32),
            saved["pos"],
            saved["has_gauss"],
            saved["cached_gaussian"],
        )
    )


def rng_states() -> dict[str, Any]:
    """This process's RNG states as tensors and plain types (safe for ``weights_only``)."""
    states = {
        "python": _python_rng_state(),
        "numpy": _numpy_rng_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    _set_python_rng_state(states["python"])
    _set_numpy_rng_state(states["numpy"])
    torch.set_rng_state(states["torch"].cpu())
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])


@registry.register_runner("runner_base")
class RunnerBase:
    """Trains ``model`` on ``datasets`` as ``cfg.run_cfg`` says (see the module docstring).

    ``cfg.run_cfg`` is read once, typed, into ``run_config``: after init_distributed_mode has
    written rank, gpu and distributed into it.
    """

    def __init__(
        self, cfg: Any, task: Any, model: nn.Module, datasets: dict[str, Any], job_id: str
    ) -> None:
        self.config = cfg
        self.run_config = RunConfig.from_node(cfg.run_cfg, training=True)
        self.job_id = job_id
        self.task = task
        self.datasets = datasets
        self._wrapped_model: nn.Module | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._scaler: torch.amp.GradScaler | None = None
        self._dataloaders: dict[str, Any] | None = None
        self._lr_sched: Any = None
        self.start_epoch = 0
        self.start_iter = 0
        self.start_meters: dict[str, Any] | None = None  # the resumed epoch's running sums

        self.device = self._pick_device()
        self._model, self.precision = prepare_for_training(model, self.run_config, self.device)
        self.setup_output_dir()
        if self.run_config.wandb_log:
            logger.warning(
                "run.wandb_log is set: this project does not log to wandb; the statistics go to "
                "log.txt and the console as usual"
            )

    # --- placement --------------------------------------------------------------------------

    def _pick_device(self) -> torch.device:
        wanted = self.run_config.device
        if wanted.startswith("cuda") and not torch.cuda.is_available():
            logger.warning("run.device is '%s' but CUDA is not available: training on CPU", wanted)
            return torch.device("cpu")
        if wanted == "cuda" and self.use_distributed:
            return torch.device("cuda", self.run_config.gpu)
        return torch.device(wanted)

    @property
    def use_distributed(self) -> bool:
        return self.run_config.distributed and dist_utils.is_dist_avail_and_initialized()

    @property
    def cuda_enabled(self) -> bool:
        return self.device.type == "cuda"

    @property
    def model(self) -> nn.Module:
        """The model on the run device, wrapped in DDP when distributed (built once)."""
        if self._wrapped_model is None:
            model = self._model.to(self.device)
            if self.use_distributed:
                device_ids = [self.device.index] if self.cuda_enabled else None
                model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
            self._wrapped_model = model
        return self._wrapped_model

    @staticmethod
    def unwrap_dist_model(model: nn.Module) -> nn.Module:
        return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model

    # --- optimisation -----------------------------------------------------------------------

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """AdamW; no weight decay on 1-D params and names containing bias/ln/bn."""
        if self._optimizer is None:
            self._optimizer = build_optimizer(self.model, self.run_config)
        return self._optimizer

    @property
    def scaler(self) -> torch.amp.GradScaler | None:
        if self._scaler is None and self.precision.grad_scaler:
            self._scaler = torch.amp.GradScaler("cuda")
        return self._scaler

    @property
    def lr_scheduler(self) -> Any:
        if self._lr_sched is None:
            run = self.run_config
            lr_sched_cls = registry.get_lr_scheduler_class(run.lr_sched)
            self._lr_sched = lr_sched_cls(
                optimizer=self.optimizer,
                max_epoch=self.max_epoch,
                iters_per_epoch=self.iters_per_epoch,
                min_lr=run.min_lr,
                init_lr=run.init_lr,
                decay_rate=run.lr_decay_rate,
                warmup_start_lr=run.warmup_lr,
                warmup_steps=run.warmup_steps,
            )
        return self._lr_sched

    @property
    def max_epoch(self) -> int:
        return self.run_config.max_epoch

    @property
    def iters_per_epoch(self) -> int:
        if self.run_config.iters_per_epoch is not None:
            return self.run_config.iters_per_epoch
        try:
            return len(self.dataloaders["train"])
        except (AttributeError, TypeError):
            logger.info(
                "run.iters_per_epoch not set and the data has no length: using %d",
                FALLBACK_ITERS_PER_EPOCH,
            )
            return FALLBACK_ITERS_PER_EPOCH

    @property
    def accum_grad_iters(self) -> int:
        return self.run_config.accum_grad_iters

    @property
    def log_freq(self) -> int:
        return self.run_config.log_freq

    @property
    def save_freq_iters(self) -> int:
        return self.run_config.save_freq_iters

    @property
    def resume_ckpt_path(self) -> str | None:
        return self.run_config.resume_ckpt_path

    @property
    def train_splits(self) -> list[str]:
        return list(self.run_config.train_splits)

    # --- data -------------------------------------------------------------------------------

    @property
    def dataloaders(self) -> dict[str, Any]:
        """``{"train": endless loader}`` over every dataset's train split, mixed by ratio."""
        if self._dataloaders is None:
            logger.info(
                "dataset_ratios not specified, datasets will be concatenated (map-style "
                "datasets) or chained (webdataset.DataPipeline)."
            )
            splits = self.train_splits
            by_split = {split: [] for split in splits}
            for name, dataset in self.datasets.items():
                for split in splits:
                    if split not in dataset:
                        raise ValueError(f"dataset '{name}' has no '{split}' split")
                    by_split[split].append(dataset[split])
            self._dataloaders = {}
            for split, datasets in by_split.items():
                num_records = sum(0 if _is_stream(d) else len(d) for d in datasets)
                logger.info("Loaded %d records for %s split from the dataset.", num_records, split)
                ratios = None
                if all(hasattr(d, "sample_ratio") for d in datasets):
                    ratios = [float(d.sample_ratio) for d in datasets]
                loaders = [self._create_loader(d) for d in datasets]
                self._dataloaders[split] = MultiIterLoader(loaders, ratios=ratios)
        return self._dataloaders

    def _batch_size(self, dataset: Any) -> tuple[int, str]:
        """The training batch size and the key that set it: ``datasets.<name>.batch_size``
        (where the original's LLaMA-2 configs put it), else ``run.batch_size_train``."""
        name = getattr(dataset, "name", None)
        block = self.config.datasets_cfg.get(name) if name else None
        if block is not None and block.get("batch_size") is not None:
            return int(block.batch_size), f"datasets.{name}.batch_size"
        if self.run_config.batch_size_train is None:
            raise ValueError(
                f"no batch size: set run.batch_size_train or datasets.{name}.batch_size"
            )
        return self.run_config.batch_size_train, "run.batch_size_train"

    def _create_loader(self, dataset: Any) -> Any:
        """An endless training loader: webdataset streams as they are, map-style datasets
        through a resumable sampler, reshuffled each pass."""
        bsz, bsz_key = self._batch_size(dataset)
        num_workers, seed = self.run_config.num_workers, self.run_config.seed
        rank = dist_utils.get_rank()
        # A private generator: creating loader iterators must not draw from the global RNG,
        # or a resumed run would diverge from an uninterrupted one.
        generator = torch.Generator().manual_seed(seed + rank)
        if _is_stream(dataset):
            if not hasattr(dataset, "positioned_samples"):  # another kind of IterableDataset
                loader = DataLoader(
                    dataset,
                    batch_size=bsz,
                    num_workers=num_workers,
                    pin_memory=self.cuda_enabled,
                    generator=generator,
                )
                return iter(loader)
            # Endless; every rank and worker reads its own seeded stream.
            return StreamLoader(
                dataset, bsz, num_workers, pin_memory=self.cuda_enabled, generator=generator
            )
        sampler = ResumableDistributedSampler(
            dataset,
            num_replicas=dist_utils.get_world_size(),
            rank=rank,
            shuffle=True,
            seed=seed,
            keyed=True,
        )
        name = getattr(dataset, "name", "?")
        loader = DataLoader(
            SeededSamples(dataset, seed=mix_seed(seed, rank, name)),
            batch_size=bsz,
            num_workers=num_workers,
            pin_memory=self.cuda_enabled,
            sampler=sampler,
            shuffle=False,
            collate_fn=getattr(dataset, "collater", None),
            drop_last=True,
            generator=generator,
        )
        if len(loader) == 0:
            raise ValueError(
                f"dataset '{name}' has {len(dataset)} samples, fewer than one batch of {bsz} "
                f"per rank; lower {bsz_key}"
            )
        return IterLoader(loader, use_distributed=self.use_distributed)

    @property
    def train_loader(self) -> Any:
        return self.dataloaders["train"]

    # --- output -----------------------------------------------------------------------------

    def setup_output_dir(self) -> None:
        """``run.output_dir/<job_id>`` relative to the current directory (rank 0 creates it).

        The job id has 10-minute resolution, so a second run started soon after the first
        would overwrite its checkpoints; it gets ``<job_id>_1`` (``_2``, ...) instead.
        """
        base = os.path.abspath(os.path.expanduser(self.run_config.output_dir))
        job_id = self.job_id
        if dist_utils.is_main_process():
            suffix = 0
            while _non_empty_dir(os.path.join(base, job_id)):
                suffix += 1
                job_id = f"{self.job_id}_{suffix}"
            if suffix:
                logger.warning(
                    "%s already holds a run: writing to %s", os.path.join(base, self.job_id), job_id
                )
            os.makedirs(os.path.join(base, job_id, "result"), exist_ok=True)
            self._remove_stale_temp_files(base)
        if self.use_distributed:
            # Ranks compute job ids independently; rank 0's is the run's.
            shared = [job_id]
            dist.broadcast_object_list(shared, src=0)
            job_id = shared[0]
        self.job_id = job_id
        self.output_dir = os.path.join(base, job_id)
        self.result_dir = os.path.join(self.output_dir, "result")

    def _remove_stale_temp_files(self, base: str) -> None:
        """Temporary files of saves that a kill interrupted, in this output dir's runs."""
        folders = [os.path.join(base, name) for name in sorted(os.listdir(base))]
        if self.resume_ckpt_path:
            folders.append(os.path.dirname(resolve_path(self.resume_ckpt_path)))
        remove_stale_temp_files(folders)

    @dist_utils.main_process
    def log_config(self) -> None:
        with open(os.path.join(self.output_dir, "log.txt"), "a", encoding="utf-8") as f:
            f.write(json.dumps(self.config.to_dict(), indent=4) + "\n")
        atomic_write_text(
            OmegaConf.to_yaml(OmegaConf.create(self.config.to_dict())),
            os.path.join(self.output_dir, "config.yaml"),
        )

    @dist_utils.main_process
    def log_stats(self, stats: dict[str, Any], split_name: str) -> None:
        line = {f"{split_name}_{k}": v for k, v in stats.items()}
        with open(os.path.join(self.output_dir, "log.txt"), "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    # --- training ---------------------------------------------------------------------------

    def train(self) -> None:
        """Train from ``start_epoch`` (0, or after the resumed checkpoint) to ``max_epoch - 1``,
        saving ``checkpoint_{epoch}.pth`` after every epoch."""
        start_time = time.time()
        self.log_config()
        logger.info("Start training")
        # Build everything first so that restoring RNG states is the last thing before step 1.
        _ = (self.model, self.train_loader, self.optimizer, self.lr_scheduler)
        if self.resume_ckpt_path:
            self._load_checkpoint(self.resume_ckpt_path)

        if self.iters_per_epoch % self.accum_grad_iters:
            logger.warning(
                "iters_per_epoch (%d) is not a multiple of accum_grad_iters (%d): the last "
                "iterations of each epoch accumulate gradients that are never applied",
                self.iters_per_epoch,
                self.accum_grad_iters,
            )
        for cur_epoch in range(self.start_epoch, self.max_epoch):
            if cur_epoch != self.start_epoch:
                logger.info("Start training")
            self._train_epoch(cur_epoch, resumed=cur_epoch == self.start_epoch)

        total_time = time.time() - start_time
        logger.info("Training time %s", str(datetime.timedelta(seconds=int(total_time))))

    def _train_epoch(self, cur_epoch: int, resumed: bool) -> None:
        """One epoch (the rest of it when ``resumed`` part-way), its stats and checkpoint."""
        model, loader = self.model, self.train_loader
        model.train()
        if hasattr(loader, "start_training_epoch"):
            loader.start_training_epoch(cur_epoch)
        train_stats = self.task.train_epoch(
            epoch=cur_epoch,
            model=model,
            data_loader=loader,
            optimizer=self.optimizer,
            lr_scheduler=self.lr_scheduler,
            iters_per_epoch=self.iters_per_epoch,
            device=self.device,
            scaler=self.scaler,
            precision=self.precision,
            log_freq=self.log_freq,
            accum_grad_iters=self.accum_grad_iters,
            start_iter=self.start_iter if resumed else 0,
            start_meters=self.start_meters if resumed else None,
            on_step=self._maybe_save_iter_checkpoint if self.save_freq_iters else None,
        )
        self.log_stats(split_name="train", stats=train_stats)
        logger.info("No validation splits found.")  # the original's line: nothing to evaluate
        self._save_checkpoint(cur_epoch, next_epoch=cur_epoch + 1, next_iter=0)
        dist_utils.barrier()

    def _maybe_save_iter_checkpoint(self, epoch: int, i: int, meters: Any = None) -> None:
        """After optimizer step ``i``: every ``save_freq_iters`` iterations, checkpoint_latest."""
        done = i + 1
        if done % self.save_freq_iters == 0 and done < self.iters_per_epoch:
            self._save_checkpoint(
                epoch,
                next_epoch=epoch,
                next_iter=done,
                name=ITER_CHECKPOINT_NAME,
                meters=meters.state_dict() if meters is not None else None,
            )

    # --- checkpoints ------------------------------------------------------------------------

    def _rank_state(self, meters: dict[str, Any] | None) -> dict[str, Any]:
        loader = self.train_loader
        return {
            "rng": rng_states(),
            "loaders": loader.state_dict() if hasattr(loader, "state_dict") else None,
            # this rank's running sums of the epoch's stats (None at an epoch's end)
            "meters": meters,
        }

    def _save_checkpoint(
        self,
        cur_epoch: int,
        next_epoch: int,
        next_iter: int,
        name: str | None = None,
        meters: dict[str, Any] | None = None,
    ) -> None:
        """All ranks call this (RNG states are gathered); rank 0 writes."""
        rank_state = self._rank_state(meters)
        if self.use_distributed:
            rank_states: list[Any] = [None] * dist_utils.get_world_size()
            dist.all_gather_object(rank_states, rank_state)
        else:
            rank_states = [rank_state]
        if not dist_utils.is_main_process():
            return

        # Frozen parameters are dropped, buffers kept: the original's checkpoint content.
        state_dict = training_checkpoint_state(self.unwrap_dist_model(self.model))
        save_obj = {
            "model": state_dict,
            "optimizer": self.optimizer.state_dict(),
            "config": self.config.to_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": cur_epoch,
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "train_state": {
                "next_epoch": next_epoch,
                "next_iter": next_iter,
                "world_size": dist_utils.get_world_size(),
            },
            "rank_states": _to_cpu(rank_states),
        }
        save_to = os.path.join(self.output_dir, name or f"checkpoint_{cur_epoch}.pth")
        if name is None:
            logger.info("Saving checkpoint at epoch %d to %s.", cur_epoch, save_to)
        else:
            logger.info(
                "Saving checkpoint at epoch %d, iteration %d to %s.", cur_epoch, next_iter, save_to
            )
        atomic_torch_save(save_obj, save_to)
        if name is None and self.save_freq_iters:
            # With periodic checkpoints, checkpoint_latest.pth is always the newest state.
            atomic_torch_save(save_obj, os.path.join(self.output_dir, ITER_CHECKPOINT_NAME))

    def _load_checkpoint(self, path: str) -> None:
        """Restore weights, optimizer, scaler, scheduler, position and RNG from ``path``."""
        path = resolve_path(str(path))
        checkpoint = read_checkpoint(path, RESUME_KEY, RESUME_REQUIRED)
        self.start_epoch, self.start_iter = resume_position(checkpoint)
        check_not_finished(path, self.start_epoch, self.max_epoch)

        model = self.unwrap_dist_model(self.model)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        missing = sorted(trainable - set(checkpoint["model"]))
        if missing:
            raise CheckpointError(
                f"{RESUME_KEY}: {path} lacks the trainable weights {missing}: is it a "
                "checkpoint of this model?"
            )
        result = model.load_state_dict(checkpoint["model"], strict=False)
        if result.unexpected_keys:
            logger.warning("Ignored keys in %s not in the model: %s", path, result.unexpected_keys)
        try:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        except (ValueError, KeyError) as err:
            raise CheckpointError(
                f"{RESUME_KEY}: {path}: its optimizer state does not fit this model's "
                f"trainable parameters ({err})"
            ) from err
        if self.scaler is not None and checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        if "lr_scheduler" in checkpoint:
            self.lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])

        problems = self._restore_rank_state(checkpoint.get("rank_states"))
        if problems:
            logger.warning(
                "Resuming from %s cannot be exact: %s. Weights, optimizer and lr schedule are "
                "restored; the data and random numbers differ from an uninterrupted run.",
                path,
                "; ".join(problems),
            )
        logger.info("Resume checkpoint from %s", path)

    def _restore_rank_state(self, rank_states: list[dict[str, Any]] | None) -> list[str]:
        """This rank's RNG, data position and stats; returns why that is not exact."""
        world = dist_utils.get_world_size()
        if rank_states is None or len(rank_states) != world:
            return [
                f"it holds no RNG/data state for {world} rank(s) (a checkpoint of the original "
                "or of another number of processes): random streams start fresh"
            ]
        state = rank_states[dist_utils.get_rank()]
        problems = []
        loader = self.train_loader
        if hasattr(loader, "load_state_dict"):
            if state.get("loaders") is None:
                problems.append("it holds no data position")
            else:
                problems += loader.load_state_dict(state["loaders"])
        self.start_meters = state.get("meters")
        if self.start_iter and self.start_meters is None:
            problems.append("the epoch's averaged stats will cover only the rest of the epoch")
        set_rng_states(state["rng"])  # last: nothing may draw from the RNGs after this
        return problems


def _non_empty_dir(path: str) -> bool:
    return os.path.isdir(path) and any(name != "result" for name in os.listdir(path))


def _is_stream(dataset: Any) -> bool:
    return isinstance(dataset, (ChainDataset, wds.DataPipeline, IterableDataset))


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def optimizer_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: decayed (>= 2-D weights) and not (1-D, or name has bias/ln/bn)."""
    p_wd, p_non_wd = [], []
    num_parameters = 0
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        logger.info(name)
        if param.ndim < 2 or "bias" in name or "ln" in name or "bn" in name:
            p_non_wd.append(param)
        else:
            p_wd.append(param)
        num_parameters += param.numel()
    logger.info("number of trainable parameters: %d", num_parameters)
    if num_parameters == 0:
        raise ValueError("the model has no trainable parameters")
    return [
        {"params": p_wd, "weight_decay": float(weight_decay)},
        {"params": p_non_wd, "weight_decay": 0},
    ]


def build_optimizer(model: nn.Module, run: RunConfig) -> torch.optim.AdamW:
    """AdamW(lr=init_lr, betas=(0.9, beta2)) over :func:`optimizer_param_groups`."""
    return torch.optim.AdamW(
        optimizer_param_groups(model, run.weight_decay),
        lr=run.init_lr,
        weight_decay=run.weight_decay,
        betas=(0.9, run.beta2),
    )
