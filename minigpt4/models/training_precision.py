"""The one precision decision of a training run: what computes, is stored and trains in which dtype.

Two sections used to decide this apart: ``run.amp`` / ``run.amp_dtype`` wrapped the training
step in an autocast, and ``model.autocast_dtype`` wrapped the model's parts in another one; the
inner one won, so ``run.amp_dtype: bf16`` beside the default ``model.autocast_dtype`` computed
in fp16 without a GradScaler. And on a CPU the runner cast the whole model to fp32, so a 7B
stage 2 needed ~28 GB although its bf16 weights take 15 GB. Here one function reads both
sections together (:func:`decide`) and gives a :class:`TrainingPrecision`:

- CUDA: one autocast for the step, in ``run.amp_dtype`` when ``run.amp`` is on (the LLM is then
  stored in that dtype too: ``model.autocast_dtype`` follows it), else in
  ``model.autocast_dtype`` (the original's inner autocast, which it ran whatever ``run.amp``
  said); a GradScaler when ``run.amp`` computes in fp16, as the original.
- CPU: no autocast. The frozen parts stay in ``model.cpu_dtype`` (bf16 by default, or 8/4-bit)
  and each part computes in its own dtype; ``run.amp: True`` means that bf16.
- Trained parameters are fp32 master weights (``llama_proj`` is fp32 in the original), so their
  gradients and AdamW state are fp32: all of them on CUDA, where the autocast computes in half
  precision whatever they are stored in; on a CPU ``llama_proj`` (the model casts its input)
  and LoRA's weights (peft casts theirs),
  while a trained part inside a bf16 LLM or vision side keeps its neighbours' dtype, since
  without autocast its input comes in that dtype. The loss is fp32.

Contradicting settings (``run.amp_dtype: bf16`` with an explicit ``model.autocast_dtype: fp16``,
``run.amp: True`` with ``model.cpu_dtype: fp32``) are a :class:`ConfigError` naming both keys,
raised by :func:`check_training_config` before the model loads. The runner calls
:func:`prepare_for_training` once; the decision is logged in one line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from minigpt4.common.config_error import ConfigError
from minigpt4.common.run_config import AMP_DTYPES, RunConfig
from minigpt4.models.base_model import AUTOCAST_DTYPES
from minigpt4.models.lora import is_lora_weight
from minigpt4.models.precision import CPU_DTYPES, DTYPE_NAMES, Precision

logger = logging.getLogger(__name__)

TRAINABLE_DTYPE = torch.float32  # master weights, their gradients and AdamW state
# Without autocast, a trained part computes in fp32 only where the model casts its input
# (llama_proj; peft casts LoRA's input to its weights' dtype and its output back).
_CASTS_ITS_INPUT = ("llama_proj.",)
_QUANTIZED = {"8bit": "8-bit int8", "4bit": "4-bit NF4"}


@dataclass(frozen=True)
class TrainingPrecision:
    """What one training step computes in, and what the parts are kept in."""

    device_kind: str
    autocast: torch.dtype | None  # the step's one autocast; None: none
    grad_scaler: bool  # fp16 autocast under run.amp: scale the loss
    frozen: str  # the dtypes the frozen parts are stored in, in words
    chosen_by: str  # the config keys that made the decision
    trainable: str = "fp32"  # the dtypes of the trained parameters (and their AdamW state)

    def autocast_context(self) -> contextlib.AbstractContextManager:
        """The autocast that wraps the forward of one training step (or nothing)."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_kind, dtype=self.autocast)

    def describe(self) -> str:
        """The decision in one log line."""
        if self.autocast is None:
            compute = "no autocast, each part in its stored dtype"
        else:
            scaler = " with a GradScaler" if self.grad_scaler else ""
            compute = f"{DTYPE_NAMES[self.autocast]} autocast{scaler}"
        return (
            f"Training precision on {self.device_kind}: compute {compute}; frozen parts "
            f"{self.frozen}; trainable parameters, gradients and AdamW state {self.trainable}; "
            "loss fp32 "
            f"({self.chosen_by})"
        )


def _frozen_dtypes(precision: Precision) -> str:
    llm = DTYPE_NAMES[precision.llm]
    if precision.quantization:
        llm = f"{_QUANTIZED[precision.quantization]} (rest {llm})"
    return f"{precision.frozen_vision()}, LLM {llm}"


def _contradiction(first: str, second: str, why: str) -> ConfigError:
    return ConfigError(f"{first} and {second} contradict each other: {why}")


def decide(
    run: RunConfig,
    model: Any,
    device_kind: str,
    run_keys: Collection[str] | None = None,
    model_keys: Collection[str] | None = None,
) -> TrainingPrecision:
    """The training precision of ``run`` (a :class:`RunConfig`) with ``model`` (a
    ``MiniGPT4Config``, or None for a model without one) on ``device_kind``.

    ``run_keys`` / ``model_keys``: the keys the user set (None: every value counts as set);
    a value left to its default never contradicts one that was set.
    """

    def given(keys: Collection[str] | None, key: str) -> bool:
        return keys is None or key in keys

    amp_dtype = AMP_DTYPES[run.amp_dtype]
    if model is None:  # a model without a MiniGPT-4 config: the run section alone decides
        autocast = amp_dtype if run.amp and device_kind == "cuda" else None
        return TrainingPrecision(
            device_kind, autocast, autocast == torch.float16, "as built", "run.amp, run.amp_dtype"
        )
    if device_kind == "cuda":
        model_dtype = AUTOCAST_DTYPES[model.autocast_dtype]
        if run.amp and amp_dtype != model_dtype and given(model_keys, "autocast_dtype"):
            raise _contradiction(
                f"run.amp_dtype={run.amp_dtype}",
                f"model.autocast_dtype={model.autocast_dtype}",
                "the training step has one autocast; leave model.autocast_dtype out (it then "
                "follows run.amp_dtype) or set both to the same dtype",
            )
        autocast = amp_dtype if run.amp else model_dtype
        chosen_by = "run.amp, run.amp_dtype" if run.amp else "run.amp off: model.autocast_dtype"
        precision = Precision.of(model, "cuda")
        frozen = _frozen_dtypes(precision)
        return TrainingPrecision(
            "cuda", autocast, run.amp and autocast == torch.float16, frozen, chosen_by
        )
    if run.amp and CPU_DTYPES[model.cpu_dtype] == torch.float32:
        raise _contradiction(
            "run.amp=True",
            "model.cpu_dtype=fp32",
            "mixed precision on a CPU is bf16 (model.cpu_dtype: bf16); set run.amp: False to "
            "train in fp32",
        )
    if run.amp and amp_dtype == torch.float16 and given(run_keys, "amp_dtype"):
        raise _contradiction(
            "run.amp_dtype=fp16",
            f"run.device={run.device} (training on cpu)",
            "a CPU trains in bf16 (model.cpu_dtype) or fp32, not fp16; set run.amp_dtype: bf16 "
            "or leave it out",
        )
    frozen = _frozen_dtypes(Precision.of(model, "cpu"))
    return TrainingPrecision("cpu", None, False, frozen, "model.cpu_dtype, run.amp")


def run_device_kind(run: RunConfig) -> str:
    """Where training runs: ``run.device``, or the CPU when it names CUDA and there is none
    (the runner's fallback)."""
    kind = torch.device(run.device).type
    return "cpu" if kind == "cuda" and not torch.cuda.is_available() else kind


def check_training_config(cfg: Any) -> TrainingPrecision:
    """Check ``cfg``'s ``run`` and ``model`` sections together before the model loads; raise a
    :class:`ConfigError` naming both keys of a contradiction.

    The model section is completed so that the model is built for the run: ``model.device``
    (which picks the dtypes it is built in) follows ``run.device``, and on CUDA under
    ``run.amp`` ``model.autocast_dtype`` follows ``run.amp_dtype``, unless they are set.
    """
    from minigpt4.models.model_config import MiniGPT4Config

    run = cfg.training_run_config()
    section: Mapping = cfg.model_cfg
    kind = run_device_kind(run)
    if section.get("device") is None:
        section.device = kind
    elif torch.device(section.device).type != kind:
        raise _contradiction(
            f"model.device={section.device}",
            f"run.device={run.device}",
            "the model is built for the device it trains on; leave model.device out",
        )
    model_keys = {key for key, value in section.items() if value is not None}
    if kind == "cuda" and run.amp and "autocast_dtype" not in model_keys:
        section.autocast_dtype = "bf16" if AMP_DTYPES[run.amp_dtype] == torch.bfloat16 else "fp16"
    model = MiniGPT4Config.from_cfg(_plain(section), **_arch_defaults(section))
    return decide(run, model, kind, set(cfg.run_cfg.keys()), model_keys)


def _plain(section: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return dict(OmegaConf.to_container(section, resolve=True))


def _arch_defaults(section: Mapping) -> dict[str, Any]:
    """The model class's own defaults for the section's ``arch`` (e.g. the LLaMA-2 model's)."""
    from minigpt4.common.registry import registry

    model_cls = registry.get_model_class(section.get("arch", "mini_gpt4"))
    return dict(getattr(model_cls, "CONFIG_DEFAULTS", {}))


def prepare_for_training(
    model: nn.Module, run: RunConfig, device: torch.device
) -> tuple[nn.Module, TrainingPrecision]:
    """Decide ``model``'s training precision on ``device`` and make its trained parameters fp32
    master weights where the forward allows (see the module docstring); the frozen parts keep
    the dtypes they were built in (no fp32 copy of the model). Logs the decision in one line."""
    config = getattr(model, "config", None)
    plan = decide(run, config if hasattr(config, "cpu_dtype") else None, device.type)
    built_for = getattr(model, "device_kind", device.type)
    if built_for != device.type:
        raise ConfigError(
            f"the model was built for {built_for} (model.device) and is to train on "
            f"{device.type} (run.device): build it with model.device={device.type}"
        )
    trained = set()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if device.type == "cuda" or name.startswith(_CASTS_ITS_INPUT) or is_lora_weight(name):
            param.data = param.data.to(TRAINABLE_DTYPE)
        trained.add(DTYPE_NAMES[param.dtype])
    plan = dataclasses.replace(plan, trainable=" and ".join(sorted(trained)) or "none")
    logger.info(plan.describe())
    return model, plan
