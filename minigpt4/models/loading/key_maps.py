"""The key layouts of the files MiniGPT-4 reads and writes, and their mapping to the modules:
the EVA ViT (blocks beyond the model's depth dropped, ``pos_embed`` resized), BLIP-2's Q-Former
(LAVIS names), the released MiniGPT-4 checkpoint (``llama_proj``) and a training checkpoint."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from minigpt4.common.checkpoint_files import CheckpointError
from minigpt4.models import lora
from minigpt4.models.qformer import BERT_BASE_MAX_POSITIONS, ours_to_lavis

logger = logging.getLogger(__name__)


# Keys of the blip2 file that MiniGPT-4 does not use (the T5 projection of BLIP-2 FlanT5).
BLIP2_UNUSED_PREFIXES = ("t5_proj.",)
BLIP2_PARTS = ("query_tokens", "ln_vision.", "Qformer.")
LLAMA_PROJ_KEYS = ("llama_proj.weight", "llama_proj.bias")
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")


def adapt_eva_vit_state(
    state: Mapping[str, torch.Tensor], depth: int, num_patches: int
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """An ``eva_vit_g.pth`` state dict made to fit a ViT of ``depth`` blocks and ``num_patches``.

    Blocks beyond ``depth`` (EVA-CLIP-g's 40th) are dropped by name and returned as ignored; a
    ``pos_embed`` of another grid is interpolated (bicubic, CLS kept), as the original does.
    """
    adapted, ignored = {}, []
    for key, value in state.items():
        match = _BLOCK_KEY.match(key)
        if match and int(match.group(1)) >= depth:
            ignored.append(key)
        else:
            adapted[key] = value
    pos_embed = adapted.get("pos_embed")
    if pos_embed is not None and pos_embed.ndim == 3 and pos_embed.shape[1] != num_patches + 1:
        adapted["pos_embed"] = interpolate_pos_embed(pos_embed, num_patches)
    return adapted, ignored


def interpolate_pos_embed(
    pos_embed: torch.Tensor, num_patches: int, num_extra_tokens: int = 1
) -> torch.Tensor:
    """Resize a checkpoint's ``pos_embed`` grid to ``num_patches`` (bicubic), keeping CLS."""
    embed_dim = pos_embed.shape[-1]
    orig_size = math.isqrt(pos_embed.shape[-2] - num_extra_tokens)
    new_size = math.isqrt(num_patches)
    logger.info(
        "Position interpolate from %dx%d to %dx%d", orig_size, orig_size, new_size, new_size
    )
    extra = pos_embed[:, :num_extra_tokens]
    grid = pos_embed[:, num_extra_tokens:]
    grid = grid.reshape(-1, orig_size, orig_size, embed_dim).permute(0, 3, 1, 2)
    grid = F.interpolate(
        grid.float(), size=(new_size, new_size), mode="bicubic", align_corners=False
    ).to(pos_embed.dtype)
    return torch.cat((extra, grid.permute(0, 2, 3, 1).flatten(1, 2)), dim=1)


def _cloned(state: Mapping[str, torch.Tensor], clone: bool = True) -> dict[str, torch.Tensor]:
    if not clone:
        return {k: v.detach() for k, v in state.items()}
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def eva_vit_state(visual_encoder: nn.Module, clone: bool = True) -> dict[str, torch.Tensor]:
    """``eva_vit_g.pth`` content: the ViT's flat state dict (the LAVIS EVA key names).
    ``clone=False`` returns the module's own tensors (no second copy, for writing big files)."""
    return _cloned(visual_encoder.state_dict(), clone)


def blip2_state(
    model: nn.Module, max_position_embeddings: int = BERT_BASE_MAX_POSITIONS, clone: bool = True
) -> dict[str, dict[str, torch.Tensor]]:
    """``blip2_pretrained_flant5xxl.pth`` content for a module with ``Qformer``,
    ``query_tokens`` and ``ln_vision``: ``{"model": {...}}`` with LAVIS key names and the
    ``position_ids`` buffer (the real file's ``t5_proj.*`` is not written: MiniGPT-4 ignores it).
    """
    parts = {k: v for k, v in model.state_dict().items() if k.startswith(BLIP2_PARTS)}
    return {"model": ours_to_lavis(_cloned(parts, clone), max_position_embeddings)}


def minigpt4_state(
    state: Mapping[str, torch.Tensor], where: str = "the state dict"
) -> dict[str, dict[str, torch.Tensor]]:
    """Released-checkpoint content ``{"model": {llama_proj.weight, llama_proj.bias}}`` (fp32)
    from a state dict that holds them (a model's, or a runner checkpoint's ``model``)."""
    missing = [k for k in LLAMA_PROJ_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{where} has no {', '.join(missing)}: not a MiniGPT-4 checkpoint")
    return {"model": {k: state[k].detach().float().contiguous().clone() for k in LLAMA_PROJ_KEYS}}


def training_checkpoint_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The ``model`` entry of a training checkpoint: the trainable parameters and the model's
    persistent buffers, i.e. the original runner's ``state_dict()`` minus frozen parameters.

    Collected from the modules, not from ``state_dict()``: bitsandbytes adds the quantization
    state of frozen weights there (``absmax``, ``quant_map``, ``quant_state.*``, ``SCB``,
    ``weight_format``), which would make a quantized run's checkpoint hundreds of MB, and
    ``state_dict()`` of a 4-bit CPU model unpacks every weight.
    """
    state = {}
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        for name, param in module._parameters.items():
            if param is not None and param.requires_grad:
                state[dot + name] = param.detach()
        for name, buf in module._buffers.items():
            if buf is not None and name not in module._non_persistent_buffers_set:
                state[dot + name] = buf.detach()
    return lora.to_original_names(state)  # LoRA weights as the original names them
