"""Every weight file of a MiniGPT-4 model: finding, checking, reading, loading and writing.

- Every file is a config key. A local path is used as it is; a URL means the file cached by
  :func:`minigpt4.common.dist_utils.download_cached_file` under ``$TORCH_HOME/hub/checkpoints/``
  (the original's behaviour, and where the usual guides put the files).
- Offline by default: a URL is downloaded only when ``model.allow_download`` is true or the
  environment sets ``MINIGPT4_ALLOW_DOWNLOAD=1``; otherwise a missing file is an error that says
  where to put it. :func:`preflight` checks every file before anything heavy is loaded and
  reports all missing ones in one error.
- Files are read safely (:func:`load_state_dict_file`: ``weights_only`` pickles or
  safetensors) and copied strictly (:func:`checked_copy`: every needed key present with the
  right shape, one error style naming the file and its config key); what a file holds beyond
  what the model uses is returned and logged.
- The same layout functions write the files (tests, the tiny world, benchmarks):
  :func:`eva_vit_state`, :func:`blip2_state`, :func:`minigpt4_state`, :func:`save_weights`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from minigpt4.common.atomic_write import atomic_write
from minigpt4.common.checkpoint_files import CheckpointError, atomic_torch_save, torch_load_safely
from minigpt4.common.output_files import file_kind
from minigpt4.common.utils import is_url, resolve_path
from minigpt4.models import lora, memory, quantized
from minigpt4.models.hf_tokenizer import HFTokenizer
from minigpt4.models.mapped_files import paging_out
from minigpt4.models.model_config import TOKENIZER_CHAT_TEMPLATE, MiniGPT4Config
from minigpt4.models.precision import run_device_kind
from minigpt4.models.qformer import (
    BERT_BASE_MAX_POSITIONS,
    LAVIS_POSITION_IDS,
    lavis_to_ours,
    ours_to_lavis,
)
from minigpt4.models.tokenizer import TOKENIZER_FILE, LlamaTokenizer
from minigpt4.models.tokenizer_base import Tokenizer

logger = logging.getLogger(__name__)

ALLOW_DOWNLOAD_ENV = "MINIGPT4_ALLOW_DOWNLOAD"
# Keys of the blip2 file that MiniGPT-4 does not use (the T5 projection of BLIP-2 FlanT5).
BLIP2_UNUSED_PREFIXES = ("t5_proj.",)
BLIP2_PARTS = ("query_tokens", "ln_vision.", "Qformer.")
LLAMA_PROJ_KEYS = ("llama_proj.weight", "llama_proj.bias")
# Known LLaMA widths, to say "13B" rather than "5120" when a checkpoint does not fit.
LLM_SIZE_BY_HIDDEN = {2560: "3B", 4096: "7B", 5120: "13B", 6656: "33B", 8192: "65B/70B"}

HF_TOKENIZER_FILE = "tokenizer.json"
HF_TOKENIZER_CONFIG = "tokenizer_config.json"

_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")


class MissingWeightsError(FileNotFoundError):
    """One or more weight files named by the config are not there."""

    def __str__(self) -> str:
        return str(self.args[0])


# --- finding files ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightSource:
    """A weight file (or LLM folder) named by one config key."""

    config_key: str
    configured: str
    path: str
    url: str | None = None
    is_llm_folder: bool = False
    # a folder that must hold a tokenizer of this kind (model.tokenizer; None: not a tokenizer)
    tokenizer: str | None = None
    holds_tokenizer: bool = False

    def problem(self) -> str | None:
        """Why this source cannot be used right now, or None when it is in place."""
        if self.is_llm_folder or self.holds_tokenizer:
            return _folder_problem(
                self.path, self.is_llm_folder, self.holds_tokenizer, self.tokenizer
            )
        if os.path.isfile(self.path):
            return None
        if os.path.isdir(self.path):
            return f"{self.path} is a directory; a checkpoint file is expected"
        kind = file_kind(self.path)
        return f"{self.path} is {kind}, not a file" if kind else "not found"

    def describe_fix(self) -> str:
        if self.holds_tokenizer and not self.is_llm_folder:
            return (
                f"set {self.config_key} to a folder with the LLM's tokenizer ({TOKENIZER_FILE} "
                f"or {HF_TOKENIZER_FILE}), or leave it empty to use model.llama_model's"
            )
        if self.is_llm_folder:
            return (
                f"set {self.config_key} to a Hugging Face causal-LM folder (config.json, "
                f"weights and a tokenizer: {TOKENIZER_FILE} for LLaMA/Vicuna, tokenizer.json "
                "for other families), e.g. with --options "
                f"{self.config_key}=/path/to/vicuna (Meta's original checkpoints must first be "
                "converted with transformers' convert_llama_weights_to_hf.py, and Vicuna v0 "
                "deltas applied with FastChat's apply_delta)"
            )
        if self.url:
            return (
                f"download {self.url} and put it at {self.path} (the $TORCH_HOME/hub/checkpoints "
                f"cache), or set {self.config_key} to a local file, or allow the download with "
                f"model.allow_download=True or {ALLOW_DOWNLOAD_ENV}=1"
            )
        return f"put the file there or set {self.config_key} to where it is"


def downloads_allowed(config_value: bool | None = None) -> bool:
    """Opt-in switch for URL downloads: the config key wins, then ``$MINIGPT4_ALLOW_DOWNLOAD``."""
    if config_value is not None:
        return bool(config_value)
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes")


def weight_source(config_key: str, value: str, is_llm_folder: bool = False) -> WeightSource:
    """Where the file configured as ``value`` lives locally (a URL maps to the torch hub cache)."""
    if is_url(value):
        from minigpt4.common.dist_utils import cached_file_path

        return WeightSource(config_key, value, cached_file_path(value), url=value)
    return WeightSource(config_key, value, resolve_path(value), is_llm_folder=is_llm_folder)


def llm_sources(config: MiniGPT4Config) -> list[WeightSource]:
    """The LLM folder and, where the tokenizer is elsewhere (``model.tokenizer_path``), that
    folder; whichever holds the tokenizer is checked for one of ``model.tokenizer``'s kind."""
    llm = WeightSource(
        "model.llama_model",
        config.llama_model,
        resolve_path(config.llama_model),
        is_llm_folder=True,
        tokenizer=config.tokenizer,
        holds_tokenizer=not config.tokenizer_path,
    )
    if not config.tokenizer_path:
        return [llm]
    path = resolve_path(config.tokenizer_path)
    own = WeightSource(
        "model.tokenizer_path",
        config.tokenizer_path,
        path,
        tokenizer=config.tokenizer,
        holds_tokenizer=True,
    )
    return [llm, own]


def config_sources(config: MiniGPT4Config) -> list[WeightSource]:
    """Every file the config needs: ViT, Q-Former (if used), LLM folder, checkpoint, prompts."""
    sources = [weight_source("model.vit_model_path", config.vit_model_path)]
    sources += [weight_source(key, value) for key, value in config.adapter.weight_files(config)]
    sources += llm_sources(config)
    if config.ckpt:
        sources.append(weight_source("model.ckpt", config.ckpt))
    if config.prompt_path:
        path = resolve_path(config.prompt_path)
        sources.append(WeightSource("model.prompt_path", config.prompt_path, path))
    return sources


def preflight(sources: Iterable[WeightSource], allow_download: bool = False) -> None:
    """Raise one :class:`MissingWeightsError` listing every source that is not in place.

    A URL whose file is not cached yet counts as present when downloads are allowed.
    """
    problems = []
    for source in sources:
        problem = source.problem()
        if problem is None or (source.url and allow_download and problem == "not found"):
            continue
        shown = (
            source.configured
            if source.configured == source.path
            else (f"{source.configured!r} -> {source.path}")
        )
        problems.append(
            f"  - {source.config_key}: {shown}: {problem}.\n    Fix: {source.describe_fix()}."
        )
    if problems:
        raise MissingWeightsError(
            f"{len(problems)} weight file(s) needed by the model config are missing:\n"
            + "\n".join(problems)
        )


def fetch(source: WeightSource, allow_download: bool = False) -> str:
    """Local path of ``source``, downloading a configured URL into the cache if allowed."""
    problem = source.problem()
    if problem is None:
        return source.path
    if source.url and allow_download and problem == "not found":
        from minigpt4.common.dist_utils import download_cached_file

        return download_cached_file(source.url, check_hash=False, progress=True)
    preflight([source], allow_download)
    raise AssertionError("preflight raises for a source with a problem")


def tokenizer_kind(folder: str, configured: str | None) -> str | None:
    """``model.tokenizer`` or, unset, what the folder holds: ``sentencepiece`` for a
    ``tokenizer.model`` (LLaMA/Vicuna: the original's exact tokenizer), ``auto`` for a
    ``tokenizer.json``; None when it holds neither."""
    if configured is not None:
        return configured
    if os.path.isfile(os.path.join(folder, TOKENIZER_FILE)):
        return "sentencepiece"
    if os.path.isfile(os.path.join(folder, HF_TOKENIZER_FILE)):
        return "auto"
    return None


def _tokenizer_lack(names: set[str], kind: str | None) -> str | None:
    if kind == "sentencepiece" and TOKENIZER_FILE not in names:
        return f"the SentencePiece tokenizer ({TOKENIZER_FILE}; model.tokenizer: sentencepiece)"
    if kind == "auto" and not names & {HF_TOKENIZER_FILE, HF_TOKENIZER_CONFIG, TOKENIZER_FILE}:
        return f"a tokenizer ({HF_TOKENIZER_FILE} or {HF_TOKENIZER_CONFIG}; model.tokenizer: auto)"
    if kind is None and not names & {HF_TOKENIZER_FILE, TOKENIZER_FILE}:
        return f"a tokenizer ({TOKENIZER_FILE} for LLaMA/Vicuna, or {HF_TOKENIZER_FILE})"
    return None


def _folder_problem(path: str, llm: bool, tokenizer: bool, kind: str | None) -> str | None:
    if not os.path.isdir(path):
        return "not found" if not os.path.exists(path) else "not a folder"
    names = set(os.listdir(path))
    lacking = []
    if llm and "config.json" not in names:
        lacking.append("config.json")
    if llm and not any(
        n.endswith((".safetensors", ".bin")) and ("model" in n or "pytorch" in n) for n in names
    ):
        lacking.append("model weights (*.safetensors or pytorch_model*.bin)")
    if tokenizer and (lack := _tokenizer_lack(names, kind)):
        lacking.append(lack)
    return f"folder lacks {', '.join(lacking)}" if lacking else None


# --- reading files ----------------------------------------------------------------------------


def _looks_like_safetensors(path: str, where: str) -> bool:
    """Whether ``path`` is a safetensors file (by content: 8 bytes of header length, then
    ``{``); one whose header length cannot be right is an error saying so, not "not a PyTorch
    checkpoint"."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return path.endswith(".safetensors") and _bad_safetensors(where, "too short")
    header_len = int.from_bytes(head[:8], "little")
    size = os.path.getsize(path)
    if header_len >= _SAFETENSORS_MAX_HEADER or header_len > size - 8:
        _bad_safetensors(where, f"its header claims {header_len} bytes of the file's {size}")
    return True


def _bad_safetensors(where: str, why: str) -> bool:
    raise CheckpointError(
        f"{where}: a safetensors file that cannot be right ({why}): truncated "
        "or corrupt; download or export it again"
    )


def load_state_dict_file(path: str, config_key: str) -> dict[str, torch.Tensor]:
    """Read a weight file into a flat ``{name: tensor}`` dict, safely.

    Accepts a ``.safetensors`` file (recognised by content, whatever its extension) or a
    PyTorch checkpoint (read by :func:`torch_load_safely`: ``weights_only``, clear errors)
    holding either a flat state dict or ``{"model": state_dict, ...}`` (the LAVIS / MiniGPT-4 /
    runner layouts). Anything else raises :class:`CheckpointError` naming the file and
    ``config_key``.
    """
    where = f"{path} ({config_key})"
    if not os.path.isfile(path):
        raise MissingWeightsError(f"{where}: file not found")
    if _looks_like_safetensors(path, where):
        from safetensors.torch import load_file

        try:
            obj = load_file(path, device="cpu")
        except Exception as err:  # noqa: BLE001
            raise CheckpointError(f"{where}: cannot be read as safetensors: {err}") from err
    else:
        # Memory-mapped: the tensors stay file pages (reclaimable), not a copy in RAM.
        obj = torch_load_safely(path, config_key, mmap=True)
    return _unwrap_state_dict(obj, where)


def _unwrap_state_dict(obj: object, where: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"{where}: not a state dict (expected a dict of tensors, or {{'model': state_dict}}; "
            f"got {type(obj).__name__})"
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{where}: not a state dict: entries {[str(k) for k in bad[:5]]} are not tensors "
            f"(top-level keys: {list(obj)[:10]})"
        )
    return dict(obj)


def describe_keys(keys: Iterable[str], limit: int = 12) -> str:
    """Short printable list of keys for log lines and errors."""
    keys = list(keys)
    shown = json.dumps(keys[:limit])
    return shown if len(keys) <= limit else f"{shown[:-1]}, ... ({len(keys)} in all)]"


# --- copying into modules ---------------------------------------------------------------------


def checked_copy(
    target: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    where: str,
    part: str,
    hint: str,
    required: Iterable[str] | None = None,
) -> None:
    """Copy ``state`` into the tensors of ``target`` (a module's ``state_dict()``), strictly.

    Every key of ``required`` (default: all of ``target``) must be in ``state``, and every key of
    ``state`` must be in ``target`` with the same shape; otherwise one :class:`CheckpointError`
    lists what is missing, unknown and mis-shaped, naming ``where`` (file and config key),
    ``part`` (what was built) and ``hint`` (the config keys that size it). Values are cast to
    the target's dtype.
    """
    required = list(target if required is None else required)
    missing = [k for k in required if k not in state]
    unknown = [k for k in state if k not in target]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in target.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unknown or mismatched:
        details = [
            f"{label} {describe_keys(keys)}"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unknown),
                ("mismatched shapes", mismatched),
            )
            if keys
        ]
        raise CheckpointError(
            f"{where} does not fit the {part} built from the config: {'; '.join(details)}; "
            f"check {hint}."
        )
    with torch.no_grad():
        for key, value in state.items():
            target[key].copy_(value)


def _log_ignored(ignored: list[str], path: str, config_key: str) -> None:
    if ignored:
        logger.info(
            "Ignored %d key(s) of %s (%s): %s",
            len(ignored),
            path,
            config_key,
            describe_keys(ignored),
        )


# --- the parts of MiniGPT-4 -------------------------------------------------------------------


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
    _log_ignored(ignored, path, key)
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
    _log_ignored(ignored, path, key)
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
    _log_ignored(ignored, path, key)
    return ignored


# --- writing the real layouts ------------------------------------------------------------------


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


def save_weights(content: Mapping, path: str) -> None:
    """``torch.save`` ``content`` to ``path`` atomically (a temporary file, then a rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_torch_save(content, path)


# Hugging Face's shard size for the folders it writes; here it bounds what is in memory at once.
LLM_SHARD_BYTES = 2 * 1024**3
LLM_INDEX_FILE = "model.safetensors.index.json"


def _plan_shards(specs: Mapping[str, tuple[tuple[int, ...], torch.dtype]], limit: int):
    shards: list[list[str]] = [[]]
    size = 0
    for name, (shape, dtype) in specs.items():
        nbytes = math.prod(shape) * dtype.itemsize
        if shards[-1] and size + nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def write_llm_folder(
    folder: str,
    llm_config: Mapping[str, Any],
    specs: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
    make_tensor: Callable[[str, tuple[int, ...], torch.dtype], torch.Tensor],
    tokenizer_file: str,
    max_shard_bytes: int = LLM_SHARD_BYTES,
) -> list[str]:
    """A Hugging Face LLaMA-family folder (``config.json``, safetensors shards and their index,
    ``tokenizer.model``), written shard by shard: ``make_tensor(name, shape, dtype)`` is called
    for one shard's tensors at a time, so the whole LLM is never in memory. Each file is written
    atomically. Returns the shard paths."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    shards = _plan_shards(specs, max_shard_bytes)
    names = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    weight_map = {}
    for file_name, keys in zip(names, shards, strict=True):
        tensors = {k: make_tensor(k, *specs[k]).contiguous() for k in keys}
        path = os.path.join(folder, file_name)
        with atomic_write(path) as tmp:
            save_file(tensors, tmp, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(keys, file_name))
        del tensors
    total = sum(math.prod(shape) * dtype.itemsize for shape, dtype in specs.values())
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        _write_json(os.path.join(folder, LLM_INDEX_FILE), index)
    _write_json(os.path.join(folder, "config.json"), dict(llm_config))
    shutil.copyfile(tokenizer_file, os.path.join(folder, TOKENIZER_FILE))
    return [os.path.join(folder, n) for n in names]


def _write_json(path: str, content: Any) -> None:
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(content, f, indent=2)


# --- the LLM ----------------------------------------------------------------------------------


def llm_hidden_size(folder: str) -> int:
    """The LLM's hidden size from its folder's ``config.json`` (read before the weights load):
    ``hidden_size``, or for a family that names it otherwise (GPT-2's ``n_embd``) what
    transformers' config class maps ``hidden_size`` to."""
    path = os.path.join(folder, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
        if "hidden_size" in values:
            return int(values["hidden_size"])
        from transformers import AutoConfig

        llm_config = AutoConfig.from_pretrained(folder, local_files_only=True)
        return int(llm_config.get_text_config().hidden_size)
    except (OSError, ValueError, KeyError, AttributeError) as err:
        raise CheckpointError(
            f"{path} (model.llama_model): no readable hidden_size: {err}"
        ) from err


def _llm_kwargs(config: MiniGPT4Config, device_kind: str, dtype: torch.dtype) -> dict[str, Any]:
    from transformers import BitsAndBytesConfig

    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    quantization = config.quantization
    if quantization is not None:
        on_cuda = device_kind == "cuda"
        kwargs["device_map"] = {"": config.device_8bit if on_cuda else "cpu"}
        if quantization == "8bit":
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        else:
            # Double quantization stores the block scales in 8 bits instead of fp32 (0.3 GB
            # less for a 7B LLM while it loads, and on CUDA for good; the CPU kernel's repack
            # expands them to bf16).
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_compute_dtype=dtype,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
            )
    return kwargs


def load_tokenizer(config: MiniGPT4Config) -> Tokenizer:
    """The LLM's tokenizer: the original's exact SentencePiece LLaMA tokenizer for a
    ``tokenizer.model`` folder (pad token as the variant says), else transformers'
    AutoTokenizer with the config's special tokens (:func:`tokenizer_kind`)."""
    folder = resolve_path(config.tokenizer_path or config.llama_model)
    kind = tokenizer_kind(folder, config.tokenizer)
    if kind == "sentencepiece":
        for key in ("bos_token", "eos_token"):
            if getattr(config, key) is not None:
                raise ValueError(
                    f"model.{key} applies to model.tokenizer: auto; the SentencePiece LLaMA "
                    f"tokenizer of {folder} keeps its own (set model.tokenizer: auto to use it)"
                )
        if config.chat_template == TOKENIZER_CHAT_TEMPLATE:
            raise ValueError(
                f"model.chat_template: tokenizer needs model.tokenizer: auto ({folder} is read "
                "as a SentencePiece LLaMA tokenizer, which has no chat template)"
            )
        return LlamaTokenizer.from_folder(folder, pad_token=config.pad_token)
    tokenizer = HFTokenizer(folder, config.pad_token, config.bos_token, config.eos_token)
    if config.chat_template == TOKENIZER_CHAT_TEMPLATE and not tokenizer.has_chat_template:
        raise ValueError(
            f"model.chat_template is 'tokenizer' but the tokenizer in {folder} has no chat "
            "template (tokenizer_config.json 'chat_template' or chat_template.jinja); name a "
            "known template instead"
        )
    return tokenizer


def _unreadable_weights(err: BaseException) -> bool:
    """An error of reading the weight files themselves (safetensors' header or data)."""
    return "safetensors" in type(err).__module__ or "header" in str(err).lower()


def _weight_files(folder: str) -> list[str]:
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    return [n for n in names if n.endswith((".safetensors", ".bin", ".pt"))]


def load_llm(config: MiniGPT4Config, device_kind: str, dtype: torch.dtype) -> nn.Module:
    """The causal LM of ``model.llama_model`` (every weight must fit its config.json); its
    tokenizer is :func:`load_tokenizer`'s."""
    quantized.quiet_bitsandbytes(cpu_int8=config.quantization == "8bit" and device_kind != "cuda")
    from transformers import AutoModelForCausalLM

    path = resolve_path(config.llama_model)
    kwargs = _llm_kwargs(config, device_kind, dtype)
    trim = memory.trimming() if config.quantization else contextlib.nullcontext()
    mapped = [os.path.join(path, name) for name in _weight_files(path)]
    with trim, paging_out(mapped):
        try:
            llm, info = AutoModelForCausalLM.from_pretrained(
                path, output_loading_info=True, **kwargs
            )
        except Exception as err:  # noqa: BLE001 - safetensors and transformers raise many kinds
            if not _unreadable_weights(err):
                raise
            raise CheckpointError(
                f"{path} (model.llama_model): its weight files cannot be read ({err}); "
                f"check them ({', '.join(_weight_files(path)) or 'none found'}): a download cut "
                "short, a link to the wrong file, or another format"
            ) from err
    missing, mismatched = sorted(info["missing_keys"]), sorted(info["mismatched_keys"])
    if missing or mismatched:
        raise CheckpointError(
            f"{path} (model.llama_model): the weights do not fit the folder's config.json: "
            f"missing {describe_keys(missing)}, mismatched {describe_keys(mismatched)}"
        )
    if info["unexpected_keys"]:
        logger.warning(
            "Ignored %d key(s) of %s (model.llama_model): %s",
            len(info["unexpected_keys"]),
            path,
            describe_keys(sorted(info["unexpected_keys"])),
        )
    if config.quantization == "4bit" and device_kind != "cuda":
        quantized.choose_4bit_cpu_kernels(llm)
    return llm


# --- a whole model ----------------------------------------------------------------------------


@contextlib.contextmanager
def _timed(part: str) -> Iterator[None]:
    """Log how long loading ``part`` took."""
    start = time.perf_counter()
    yield
    logger.info("%s loaded in %.1f s", part, time.perf_counter() - start)


def _load_vision(model: nn.Module, config: MiniGPT4Config, allow: bool) -> None:
    report = model.load_report
    logger.info("Loading VIT")
    with _timed("ViT"):
        path = fetch(weight_source("model.vit_model_path", config.vit_model_path), allow)
        report["model.vit_model_path"] = load_eva_vit(model.visual_encoder, path)
    if config.freeze_vit:
        logger.info("freeze vision encoder")
    logger.info("Loading VIT Done")
    with _timed(f"image adapter ({config.image_adapter})"):
        config.adapter.load(model, config, lambda key, val: fetch(weight_source(key, val), allow))


def load_model(model_cls: type, config: MiniGPT4Config) -> nn.Module:
    """Check every file and the memory, build ``model_cls(config)`` empty in its run dtypes and
    load its weights, in the original's order and with its log lines: ViT, Q-Former, LLM,
    training prompts, MiniGPT-4 checkpoint. Each file's tensors are memory-mapped where the
    format allows and released once copied.

    ``model.load_report`` then maps each file's config key to the keys of it that were not used.
    """
    from minigpt4.models.prompt import load_prompts

    allow = downloads_allowed(config.allow_download)
    preflight(config_sources(config), allow)
    # A tokenizer that does not fit the config fails here, before any weights are read.
    tokenizer = load_tokenizer(config)
    folder = resolve_path(config.llama_model)
    hidden = llm_hidden_size(folder)
    memory.check_fits(model_cls, config, run_device_kind(config), hidden, folder)
    model = model_cls.build_empty(config, hidden)
    logger.info(model.precision.describe())
    model.load_report = {}
    _load_vision(model, config, allow)

    logger.info("Loading LLAMA")
    with _timed("LLM"):
        model.attach_llm(load_llm(config, model.device_kind, model.precision.llm), tokenizer)
    logger.info("Loading LLAMA Done")

    if config.prompt_path:
        model.prompt_list = load_prompts(config.prompt_path, config.prompt_template)
    if config.ckpt:
        path = fetch(weight_source("model.ckpt", config.ckpt), allow)
        logger.info(model_cls.CHECKPOINT_LOG, path)
        model.load_report["model.ckpt"] = load_minigpt4_checkpoint(model, path)
    if config.merge_lora:
        model.merge_lora()
    memory.release_freed_memory()
    return model
