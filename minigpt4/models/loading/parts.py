"""Loading the vision parts and a MiniGPT-4 checkpoint into a built model (strictly, through
:func:`~minigpt4.models.loading.strict_copy.checked_copy`), returning what each file held beyond
what the model uses."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from torch import nn

from minigpt4.common.checkpoint_files import CheckpointError
from minigpt4.models import lora
from minigpt4.models.loading.key_maps import (
    BLIP2_PARTS,
    BLIP2_UNUSED_PREFIXES,
    LLAMA_PROJ_KEYS,
    adapt_eva_vit_state,
)
from minigpt4.models.loading.reading import load_state_dict_file
from minigpt4.models.loading.strict_copy import checked_copy, describe_keys, log_ignored
from minigpt4.models.model_config import MiniGPT4Config
from minigpt4.models.qformer import LAVIS_POSITION_IDS, lavis_to_ours

logger = logging.getLogger(__name__)


# Known LLaMA widths, to say "13B" rather than "5120" when a checkpoint does not fit.
LLM_SIZE_BY_HIDDEN = {2560: "3B", 4096: "7B", 5120: "13B", 6656: "33B", 8192: "65B/70B"}


def load_eva_vit(visual_encoder: nn.Module, path: str) -> list[str]:
    """Load ``eva_vit_g.pth`` into ``visual_encoder`` strictly; return the ignored keys."""
    key = "model.vit_model_path"
    state = load_state_dict_file(path, key)
    depth = len(visual_encoder.blocks)
    state, ignored = adapt_eva_vit_state(state, depth, visual_encoder.patch_embed.num_patches)
    target = visual_encoder.state_dict()
    ignored += [k for k in state if k not in target]
    checked_copy(
        target,
        {k: v for k, v in state.items() if k in target},
        f"{path} ({key})",
        f"EVA ViT (depth {depth}, width {visual_encoder.embed_dim})",
        f"model.vit_config / {key}",
    )
    ignored.sort()
    log_ignored(ignored, path, key)
    return ignored


def load_blip2(model: nn.Module, path: str) -> list[str]:
    """Load ``query_tokens``, ``ln_vision`` and the Q-Former of ``model`` from a LAVIS BLIP-2
    checkpoint; return the ignored keys (``t5_proj.*``, the ``position_ids`` buffer, ...)."""
    key = "model.q_former_model"
    where = f"{path} ({key})"
    state = lavis_to_ours(load_state_dict_file(path, key))
    target = {k: v for k, v in model.state_dict().items() if k.startswith(BLIP2_PARTS)}
    used = {k: v for k, v in state.items() if k in target}
    checked_copy(target, used, where, "Q-Former", "model.num_query_token and model.qformer_config")
    ignored = sorted(set(state) - set(used))
    unusual = [
        k for k in ignored if k != LAVIS_POSITION_IDS and not k.startswith(BLIP2_UNUSED_PREFIXES)
    ]
    if unusual:
        logger.warning("Unexpected key(s) in %s, ignored: %s", where, describe_keys(unusual))
    logger.info("load checkpoint from %s", path)
    log_ignored(ignored, path, key)
    return ignored


def _llm_size(hidden: int) -> str:
    return f"{LLM_SIZE_BY_HIDDEN.get(hidden, f'hidden-size-{hidden}')} LLM"


def _model_kind(in_features: int, config: MiniGPT4Config, lora_weights: bool = False) -> str:
    if lora_weights:
        return "MiniGPT-v2 (LLaMA-2 Chat with LoRA: arch minigpt_v2, model_type pretrain)"
    if in_features == config.qformer_config.hidden_size:
        return "MiniGPT-4 (Vicuna, Q-Former: arch mini_gpt4, model_type pretrain_vicuna)"
    if in_features == 4 * config.vit_config.embed_dim:
        return "MiniGPT-4 (LLaMA-2 Chat, no Q-Former: arch minigpt4, model_type pretrain_llama2)"
    return f"an unknown MiniGPT-4 variant (llama_proj input width {in_features})"


def _check_llama_proj(state: Mapping, model_shape: tuple, config: MiniGPT4Config, where: str):
    weight = state.get("llama_proj.weight")
    if weight is None or weight.ndim != 2 or tuple(weight.shape) == model_shape:
        return  # a missing key is reported by checked_copy
    file_kind = _model_kind(weight.shape[1], config, bool(lora.lora_keys(state)))
    file_desc = f"{file_kind} with a {_llm_size(weight.shape[0])}"
    model_kind = _model_kind(model_shape[1], config, bool(config.lora_r))
    model_desc = f"{model_kind} with a {_llm_size(model_shape[0])}"
    raise CheckpointError(
        f"{where} is a checkpoint of {file_desc} (llama_proj {list(weight.shape)}), but the config "
        f"builds {model_desc} (llama_proj {list(model_shape)}, LLM at model.llama_model): they "
        "cannot work together. Use the MiniGPT-4 checkpoint made for this model and LLM, or "
        "change model.arch / model.model_type / model.llama_model to the checkpoint's."
    )


def load_minigpt4_checkpoint(model: nn.Module, path: str) -> list[str]:
    """Load a MiniGPT-4 checkpoint (released ``pretrained_minigpt4*.pth`` or a runner one).

    ``llama_proj.weight`` and ``.bias`` must be there and fit; any other key naming a tensor of
    the model is loaded too (shape-checked); the rest (buffers kept by the original's runner
    checkpoints) is ignored, returned and logged.
    """
    key = "model.ckpt"
    where = f"{path} ({key})"
    state = lora.from_original_names(lavis_to_ours(load_state_dict_file(path, key)))
    _check_llama_proj(state, tuple(model.llama_proj.weight.shape), model.config, where)
    own = model.state_dict()
    used = {k: v for k, v in state.items() if k in own}
    lora_weights = lora.lora_keys(own)  # a LoRA model needs every one of its LoRA weights
    hint = f"{key} and model.lora_r (the LoRA rank)" if lora_weights else key
    checked_copy(own, used, where, "MiniGPT-4 model", hint, required=LLAMA_PROJ_KEYS + lora_weights)
    ignored = sorted(set(state) - set(used))
    log_ignored(ignored, path, key)
    return ignored
