"""What trains is configuration: ``model.trainable``, ``freeze_vit`` and ``freeze_qformer``.

The original froze parts by setting ``requires_grad`` and replacing each frozen module's
``.train`` with a no-op, so they stayed in eval mode for good. That lock also stopped what needs
train mode in a frozen part: Hugging Face's gradient checkpointing runs only when its layers are
in training, and LoRA dropout inside a frozen LLM would silently do nothing. Here one function
(:func:`apply_trainable`) sets ``requires_grad`` from the configured names, and the model's
``train()`` puts every part without a trained parameter back in eval mode
(:func:`eval_frozen_parts`), unless the part asks for train mode (the LLM under gradient
checkpointing). Dropout in frozen parts stays off, as in the original.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import nn

from minigpt4.models.lora import is_lora_weight
from minigpt4.models.projection import QFORMER_PARTS

# The parts freeze_vit / freeze_qformer: False add to model.trainable, as the original trained them.
VIT_PARTS = ("visual_encoder", "ln_vision")
# The trainable name of the LLM's LoRA weights (model.lora_r > 0 adds it): not a module prefix,
# it names every ``lora_A`` / ``lora_B`` parameter wherever peft put them.
LORA_PART = "lora"


def _under(name: str, prefix: str) -> bool:
    if prefix == LORA_PART:
        return is_lora_weight(name)
    return name == prefix or name.startswith(prefix + ".")


def frozen_contradiction(trainable: Iterable[str], freeze_vit: bool, freeze_qformer: bool):
    """The first ``(trainable name, freeze key)`` pair that contradict each other, or None."""
    for name in trainable:
        for parts, key, frozen in (
            (VIT_PARTS, "freeze_vit", freeze_vit),
            (QFORMER_PARTS, "freeze_qformer", freeze_qformer),
        ):
            if frozen and any(_under(name, part) or _under(part, name) for part in parts):
                return name, key
    return None


def trainable_names(config) -> tuple[str, ...]:
    """Module-name prefixes of the parameters that train: ``model.trainable`` plus the vision
    parts that ``freeze_vit`` / ``freeze_qformer`` leave unfrozen."""
    names = list(config.trainable)
    if config.lora_r:
        names.append(LORA_PART)
    if not config.freeze_vit:
        names += VIT_PARTS
    names += config.adapter.trainable_parts(config)
    return tuple(dict.fromkeys(names))


def apply_trainable(model: nn.Module, names: Iterable[str], check: bool = True) -> None:
    """``requires_grad`` True for the parameters under one of ``names`` (module-name prefixes,
    e.g. ``llama_proj`` or ``Qformer.encoder.layer.11``), False for all others. With ``check``,
    a name that matches no parameter is a ValueError."""
    names = tuple(names)
    matched = set()
    for param_name, param in model.named_parameters():
        hits = {n for n in names if _under(param_name, n)}
        matched |= hits
        param.requires_grad = bool(hits)
    unmatched = [n for n in names if n not in matched]
    if check and unmatched:
        parts = ", ".join(name for name, _ in model.named_children())
        raise ValueError(
            f"model.trainable names {unmatched}, which match no parameter of the model; names "
            f"are module-name prefixes such as llama_proj or Qformer.encoder.layer.11 (parts: "
            f"{parts})"
        )


def eval_frozen_parts(module: nn.Module, keeps_training: Callable[[nn.Module], bool]) -> None:
    """Put every submodule of ``module`` that has no trainable parameter in eval mode (dropout
    off), except those for which ``keeps_training`` is true."""
    for child in module.children():
        if keeps_training(child):
            continue
        if any(p.requires_grad for p in child.parameters()):
            eval_frozen_parts(child, keeps_training)
        else:
            child.eval()
