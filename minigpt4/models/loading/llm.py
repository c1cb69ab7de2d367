"""The LLM and its tokenizer from ``model.llama_model``: the hidden size read before the
weights, the tokenizer of the folder's kind, and the causal LM (strict: every weight must fit
its ``config.json``)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Any

import torch
from torch import nn

from minigpt4.common.checkpoint_files import CheckpointError
from minigpt4.common.utils import resolve_path
from minigpt4.models import memory
from minigpt4.models.hf_tokenizer import HFTokenizer
from minigpt4.models.loading import quantized
from minigpt4.models.loading.sources import tokenizer_kind
from minigpt4.models.loading.strict_copy import describe_keys
from minigpt4.models.mapped_files import paging_out
from minigpt4.models.model_config import TOKENIZER_CHAT_TEMPLATE, MiniGPT4Config
from minigpt4.models.tokenizer import LlamaTokenizer
from minigpt4.models.tokenizer_base import Tokenizer

logger = logging.getLogger(__name__)


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
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    if config.quantization is not None:
        kwargs.update(quantized.load_kwargs(config, device_kind, dtype))
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
    quantized.quiet_bitsandbytes()
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
        except Exception as err:  # safetensors and transformers raise many kinds
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
    return llm
