"""Build the model, image processor and Chat of an eval config (demo, batch command, tools)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from minigpt4.common.cli import choose_threads
from minigpt4.common.registry import registry

logger = logging.getLogger(__name__)


def resolve_device(device: str | None, gpu_id: int = 0) -> str:
    """``"cpu"`` or ``"cuda:<gpu_id>"``; ``None`` picks CUDA when there is one; a resolved
    device (``"cuda:1"``) is returned as it is."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        logger.info("No --device given; using %s", device)
    if device == "cpu":
        return "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"--device {device} was asked for but torch sees no CUDA device; "
                "use --device cpu (a tiny eval config runs there)"
            )
        return device if ":" in device else f"cuda:{gpu_id}"
    raise ValueError(f"--device must be 'cpu' or 'cuda', not {device!r}")


def vis_processor_config(datasets_cfg: DictConfig | None, cfg_path: str = "config") -> DictConfig:
    """The image processor the eval config names.

    The original read ``datasets.cc_sbu_align.vis_processor.train``; that entry still wins, and
    a config naming another dataset works too.
    """
    datasets_cfg = datasets_cfg or OmegaConf.create()
    names = list(datasets_cfg.keys())
    if "cc_sbu_align" in names:
        names = ["cc_sbu_align"] + [n for n in names if n != "cc_sbu_align"]
    for name in names:
        proc = OmegaConf.select(datasets_cfg, f"{name}.vis_processor.train")
        if proc is not None:
            return proc
    raise ValueError(
        f"{cfg_path}: no image processor configured; add "
        "datasets.cc_sbu_align.vis_processor.train.name: blip2_image_eval (see "
        "eval_configs/minigpt4_eval.yaml)"
    )


def build_model_and_processor(
    cfg: Any, device: str | None = None, gpu_id: int = 0
) -> tuple[Any, Any]:
    """Model (in eval mode, on ``device``: see :func:`resolve_device`) and its eval image
    processor, from a ``Config``.

    ``model.device`` is set to the device's kind, which decides the dtypes (on CPU: bf16, or
    ``model.cpu_dtype: fp32``). ``low_resource: True`` is the original's 8-bit LLM, on CPU too
    (bitsandbytes runs there). A 4-bit LLM on CPU is repacked for its fast kernel here, at load
    time, instead of on the first answer.
    """
    from minigpt4.models.loading import quantized

    device = resolve_device(device, gpu_id)
    model_config = cfg.model_cfg
    with open_dict(model_config):
        model_config.device_8bit = gpu_id
        model_config.device = torch.device(device).type
    if device == "cpu" and model_config.get("low_resource", False):
        logger.info(
            "low_resource: True on CPU: the LLM is loaded in 8-bit (bitsandbytes' int8 weights, "
            "multiplied weight-only), the ViT and Q-Former in model.cpu_dtype; "
            "model.llm_quantization=4bit is smaller, model.low_resource=False loads the LLM in "
            "model.cpu_dtype"
        )

    model = registry.get_model_class(model_config.arch).from_config(model_config)
    model = model.to(device)
    model.eval()
    quantized.pack_4bit_for_cpu_inference(model.llama_model)
    if device == "cpu":
        choose_threads(sum(p.numel() for p in model.parameters()))

    proc_cfg = vis_processor_config(cfg.datasets_cfg)
    vis_processor = registry.get_processor_class(proc_cfg.name).from_config(proc_cfg)
    return model, vis_processor


def load_config(cfg_path: str, options: Sequence[str] | None = ()) -> Any:
    """The :class:`~minigpt4.common.config.Config` of ``cfg_path`` with ``--options``-style
    ``key=value`` overrides."""
    from minigpt4.common.config import Config

    return Config(argparse.Namespace(cfg_path=cfg_path, options=list(options or ())))


def load_chat(
    cfg_path: str, device: str | None = None, options: Sequence[str] = (), gpu_id: int = 0
) -> Any:
    """A ready :class:`~minigpt4.conversation.chat.Chat` from an eval config path, in one call
    (``options``: ``--options``-style ``key=value`` overrides; ``device``: None picks CUDA when
    there is one). Every command builds its chat through here."""
    return build_chat(load_config(cfg_path, options), device, gpu_id)


def build_chat(cfg: Any, device: str | None = None, gpu_id: int = 0) -> Any:
    """A :class:`~minigpt4.conversation.chat.Chat` on the model of a ``Config`` (template by
    ``model.model_type``; ``device`` as for :func:`resolve_device`)."""
    from minigpt4.conversation.chat import Chat

    device = resolve_device(device, gpu_id)
    model, vis_processor = build_model_and_processor(cfg, device, gpu_id)
    return Chat(model, vis_processor, device=device)
