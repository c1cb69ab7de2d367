"""A whole model: check every file and the memory, build it empty, then load each part in the
original's order and with its log lines."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

import torch
from torch import nn

from minigpt4.common.utils import resolve_path
from minigpt4.models import memory
from minigpt4.models.cpu_choice import CpuMatmul
from minigpt4.models.eva_vit import qkv_through_linear
from minigpt4.models.loading import quantized
from minigpt4.models.loading.llm import llm_hidden_size, load_llm, load_tokenizer
from minigpt4.models.loading.parts import load_eva_vit, load_minigpt4_checkpoint
from minigpt4.models.loading.sources import (
    config_sources,
    downloads_allowed,
    fetch,
    preflight,
    weight_source,
)
from minigpt4.models.model_config import MiniGPT4Config
from minigpt4.models.one_row_linear import one_row_frozen_linears
from minigpt4.models.precision import run_device_kind
from minigpt4.models.upcast_linear import upcast_frozen_linears

logger = logging.getLogger(__name__)


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


def route_cpu_products(module: nn.Module, matmul: CpuMatmul, head: nn.Module | None = None):
    """Give the frozen bf16 Linear layers of ``module`` the CPU products ``matmul`` chose:
    upcast (never ``head``, the LLM's output layer: its fp32 copy would be the largest), or
    one-row products out of oneDNN."""
    if matmul.upcast:
        qkv_through_linear(module)
        upcast_frozen_linears(module, matmul.min_rows, skip=head)
    elif matmul.one_row_aten:
        one_row_frozen_linears(module)


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
    if model.precision.cpu_matmul:
        logger.info(model.precision.cpu_matmul.describe())
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
    matmul = model.precision.cpu_matmul
    if matmul:
        route_cpu_products(model, matmul, head=model.llama_model.get_output_embeddings())
    if matmul and config.quantization:
        large = torch.float32 if matmul.upcast else None
        quantized.choose_cpu_kernels(model.llama_model, config, large)
    memory.release_freed_memory()
    return model
