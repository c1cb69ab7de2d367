"""LoRA on the LLM (MiniGPT-v2), through peft, under the original's checkpoint names.

The original adds LoRA with peft 0.2.0: rank ``lora_r`` and ``lora_alpha`` from the config,
dropout 0.05 and ``q_proj``/``v_proj`` of every layer hard-coded (its ``lora_dropout`` /
``lora_target_modules`` keys are never read). Its ``prepare_model_for_int8_training`` wraps
``lm_head`` so that logits are fp32 (``CastOutputToFloat``); here a forward hook does the same.

Names differ between the peft versions, and checkpoints carry them:

===========================================  ==================================================
peft 0.2.0 (the original's checkpoints)      peft today (this model's modules)
===========================================  ==================================================
``...q_proj.lora_A.weight``                  ``...q_proj.lora_A.default.weight``
``...q_proj.weight`` (frozen)                ``...q_proj.base_layer.weight``
``llama_model.base_model.model.lm_head.0.*`` ``llama_model.base_model.model.lm_head.*``
===========================================  ==================================================

:func:`from_original_names` / :func:`to_original_names` map a state dict each way; files are
read and written in the original's names, so the original loads what this project saves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

LORA_TARGETS = ("q_proj", "v_proj")
LORA_DROPOUT = 0.05
ADAPTER = "default"  # peft's adapter name, absent from peft 0.2.0's key names
# Every key of a LoRA-wrapped LLM starts with this (PeftModel -> LoraModel -> the HF model).
WRAPPED = "llama_model.base_model.model."
_TARGETS = "|".join(LORA_TARGETS)
_ORIGINAL_RULES = (
    (re.compile(rf"\.({_TARGETS})\.lora_([AB])\.weight$"), rf".\1.lora_\2.{ADAPTER}.weight"),
    (re.compile(rf"\.({_TARGETS})\.(weight|bias)$"), r".\1.base_layer.\2"),
    (re.compile(r"^lm_head\.0\."), "lm_head."),
)
_MODERN_RULES = (
    (re.compile(rf"\.lora_([AB])\.{ADAPTER}\.weight$"), r".lora_\1.weight"),
    (re.compile(rf"\.({_TARGETS})\.base_layer\."), r".\1."),
    (re.compile(r"^lm_head\."), "lm_head.0."),
)


def add_lora(llm: nn.Module, r: int, alpha: int) -> nn.Module:
    """``llm`` wrapped by peft with the original's LoRA (``q_proj``/``v_proj``, dropout 0.05,
    scaling ``alpha / r``, ``lora_B`` zero) and fp32 logits."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=LORA_DROPOUT,
        target_modules=list(LORA_TARGETS),
        bias="none",
        task_type="CAUSAL_LM",
    )
    llm.get_output_embeddings().register_forward_hook(_logits_to_fp32)
    return get_peft_model(llm, config)


def _logits_to_fp32(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    """peft 0.2.0's ``CastOutputToFloat``: logits in fp32 whatever the LLM's dtype."""
    return output.float()


def dropout_modules(llm: nn.Module) -> list[nn.Module]:
    """The LoRA dropout modules of ``llm`` (active in train mode, as in the original)."""
    return [m for name, m in llm.named_modules() if name.endswith(".lora_dropout")]


def _rename(state: Mapping[str, torch.Tensor], rules) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if key.startswith(WRAPPED):
            inner = key[len(WRAPPED) :]
            for pattern, replacement in rules:
                inner = pattern.sub(replacement, inner)
            key = WRAPPED + inner
        out[key] = value
    return out


def from_original_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict in peft 0.2.0's names (the original's checkpoints) in this model's names;
    keys already in today's names stay as they are."""
    return _rename(state, _ORIGINAL_RULES)


def to_original_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """This model's state dict names as peft 0.2.0 (the original) names them."""
    return _rename(state, _MODERN_RULES)


def param_count(llm_shapes: Mapping[str, tuple[int, ...]], r: int) -> int:
    """Parameters LoRA of rank ``r`` adds to an LLM with these weight shapes (the training
    memory estimate): ``r * (in + out)`` per targeted projection."""
    pattern = re.compile(rf"\.({_TARGETS})\.weight$")
    return sum(r * sum(shape) for key, shape in llm_shapes.items() if pattern.search(key))


def is_lora_weight(name: str) -> bool:
    """Whether the parameter ``name`` is a LoRA weight (in either naming)."""
    return ".lora_A." in name or ".lora_B." in name


def lora_keys(state: Mapping[str, torch.Tensor]) -> tuple[str, ...]:
    """The LoRA weights among ``state``'s keys (every one must be in a checkpoint)."""
    return tuple(k for k in state if is_lora_weight(k))
