"""The ``run`` section of a config as one typed object: its keys, their types, ranges and defaults.

:class:`RunConfig` is the only place where ``run.*`` keys are written down. Each default is what
the code did when a key was left out; keys with ``required=True`` had no default (training
failed without them), so training still needs them, but a demo or evaluation config may leave
them out. :meth:`RunConfig.from_node` checks every value when the config is built, before any
model loads, and names the key, the value, where it came from and what is allowed.

``rank``, ``gpu`` and ``dist_backend`` are written into the ``run`` node at start-up by
``init_distributed_mode`` (as in the original); they are fields so a saved, resolved
``config.yaml`` loads again.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch

from minigpt4.common.config_error import ConfigError, nearest
from minigpt4.common.config_fields import (
    BadValue,
    base_kind,
    describe,
    parse_value,
    plain,
    rule_of,
    setting,
)
from minigpt4.common.registry import registry

# run.strategy: how minigpt4/runners/strategy.py spreads the model over processes.
STRATEGIES = ("single", "ddp")

AMP_DTYPES = {
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}
DEFAULT_DIST_TIMEOUT_S = 1800.0  # a rank waiting for the others at a training step
NO_EVALUATION = "the image_text_pretrain task has no evaluation (as in the original)"
# Keys of LAVIS's evaluating runners that no task here reads: an error, not silently ignored.
UNSUPPORTED_KEYS = {
    "valid_splits": NO_EVALUATION,
    "test_splits": NO_EVALUATION,
    "use_dist_eval_sampler": NO_EVALUATION,
}


def is_device(name: str) -> bool:
    """Whether torch parses ``name`` as a device (``cuda``, ``cuda:1``, ``cpu`` ...)."""
    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class RunConfig:
    """Typed ``run`` section; build it with :meth:`from_node` (defaults: what an absent key did)."""

    # task and runner
    task: str | None = setting(required=True, choices=registry.list_tasks)
    runner: str = setting("runner_base", choices=registry.list_runners)
    evaluate: bool = setting(
        False, choices=(False,), allowed=f"false: {NO_EVALUATION}, so true would train nothing"
    )
    train_splits: tuple[str, ...] = setting((), required=True, non_empty=True)

    # optimisation
    lr_sched: str | None = setting(required=True, choices=registry.list_lr_schedulers)
    init_lr: float | None = setting(required=True, above=0)
    min_lr: float | None = setting(required=True, minimum=0)
    warmup_lr: float = setting(-1.0)  # negative: no warm-up ramp, start at init_lr
    warmup_steps: int = setting(0, minimum=0)
    lr_decay_rate: float | None = setting(None, above=0)  # linear_warmup_step_lr only
    weight_decay: float | None = setting(required=True, minimum=0)
    beta2: float = setting(0.999, minimum=0, below=1)
    max_epoch: int | None = setting(required=True, minimum=1)
    iters_per_epoch: int | None = setting(None, minimum=1)  # None: the loader's length
    accum_grad_iters: int = setting(1, minimum=1)
    # optimizer steps with a non-finite loss or gradient skipped before training stops
    nonfinite_patience: int = setting(0, minimum=0)
    amp: bool = setting(False)
    amp_dtype: str = setting("fp16", choices=tuple(AMP_DTYPES))

    # data
    batch_size_train: int | None = setting(None, minimum=1)  # or datasets.<name>.batch_size
    batch_size_eval: int | None = setting(None, minimum=1)  # the original's configs; unread
    num_workers: int = setting(0, minimum=0)

    # bookkeeping
    seed: int | None = setting(required=True, minimum=0)
    output_dir: str | None = setting(required=True)
    resume_ckpt_path: str | None = setting(None)
    save_freq_iters: int = setting(0, minimum=0)  # 0: only the end-of-epoch checkpoints
    log_freq: int = setting(50, minimum=1)
    wandb_log: bool = setting(False)  # warned about: this project does not log to wandb
    job_name: str | None = setting(None)  # the original's wandb run name; unread
    # The original's MiniGPT-v2 benchmark config: its run name and the eval scripts' answer
    # folder; unread (python -m minigpt4.evaluate writes to --out).
    name: str | None = setting(None)
    save_path: str | None = setting(None)

    # placement and distributed start-up
    device: str = setting(
        "cuda", test=is_device, allowed="a device name such as 'cuda', 'cuda:1' or 'cpu'"
    )
    world_size: int | None = setting(None, minimum=1)  # torchrun's WORLD_SIZE wins
    dist_url: str = setting("env://")
    # how long a rank waits for the others at a training step before the run stops
    dist_timeout_s: float = setting(DEFAULT_DIST_TIMEOUT_S, above=0)
    distributed: bool = setting(False)
    rank: int | None = setting(None, minimum=0)
    gpu: int = setting(0, minimum=0)
    dist_backend: str | None = setting(None, choices=("nccl", "gloo"))
    # how the model is spread over processes; None: ddp when distributed, else single
    strategy: str | None = setting(None, choices=STRATEGIES)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(spec.name for spec in fields(cls))

    @classmethod
    def from_node(
        cls,
        node: Mapping[str, Any] | None,
        source: Callable[[str], str] = lambda key: "config",
        training: bool = False,
    ) -> RunConfig:
        """Check and convert a ``run`` node; raise one ConfigError listing every problem.

        ``source(key)`` says where a key's value came from (the YAML path or ``--options``).
        A null value means the default. With ``training``, keys training needs must be set.
        """
        items = {str(key): value for key, value in (node or {}).items()}
        values, problems = _parse(items, source)
        if training:
            problems += _missing(items, source)
        if problems:
            raise ConfigError("\n".join(problems))
        return cls(**values)


def _key_problem(key: str, where: str) -> str | None:
    """Why ``run.<key>`` is not a key, or None when it is one."""
    if key in UNSUPPORTED_KEYS:
        return f"{where}: run.{key} is not supported: {UNSUPPORTED_KEYS[key]}. Remove it."
    if key not in RunConfig.keys():
        return (
            f"{where}: unknown key 'run.{key}'.{nearest(key, RunConfig.keys())} Remove or "
            "correct it (unknown keys would silently fall back to defaults)."
        )
    return None


def _parse(items: dict[str, Any], source: Callable[[str], str]) -> tuple[dict, list[str]]:
    """The converted values of ``items`` and a message for each key or value that is wrong."""
    hints = typing.get_type_hints(RunConfig)
    rules = {spec.name: rule_of(spec) for spec in fields(RunConfig)}
    values, problems = {}, []
    for key, value in items.items():
        problem = _key_problem(key, source(key))
        if problem is not None:
            problems.append(problem)
        elif value is not None:
            try:
                values[key] = parse_value(value, hints[key], rules[key])
            except BadValue as err:
                problems.append(f"{source(key)}: run.{key} = {plain(value)!r}: {err}")
    return values, problems


def _missing(items: dict[str, Any], source: Callable[[str], str]) -> list[str]:
    """A message for each key training needs that ``items`` leaves out (or sets to null)."""
    hints = typing.get_type_hints(RunConfig)
    return [
        f"{source(spec.name)}: run.{spec.name} is not set; training needs it (must be "
        f"{describe(base_kind(hints[spec.name]), rule_of(spec))})"
        for spec in fields(RunConfig)
        if rule_of(spec).required and items.get(spec.name) is None
    ]
