"""Peak memory of a training step, estimated from its parts before anything loads.

``python -m minigpt4.models.train_memory --cfg-path train_configs/minigpt4_stage2_finetune.yaml
--device cuda --dtype fp16 --batch-size 12 --llm-size 7b`` prints it; ``train.py`` logs the same
line before training. The parts:

- weights: the vision side and the LLM in the run's dtypes or quantization, sized as the memory
  preflight sizes them (:mod:`minigpt4.models.memory`: the LLM from its files' headers, or from
  a named LLaMA size when there is no folder yet), with the fp32 buffer of products computed
  in fp32 where the CPU emulates bf16 (:mod:`minigpt4.models.upcast_linear`);
- the trainable parameters' fp32 gradients and AdamW state (their fp32 weights are counted above);
- activations: the bytes autograd saves for the backward pass, per sample, *measured* by running
  the LLM on the ``meta`` device (no memory, no time) with 1 and 2 decoder layers and batches of
  1 and 2 under a saved-tensor hook: the batch difference removes the weights autograd also
  keeps, the layer difference gives one decoder layer. Eager attention, the original's, whose
  saved attention probabilities make it an upper bound of sdpa/flash on CUDA. With
  ``model.use_grad_checkpoint_llm`` each layer keeps only its input, and one layer's activations
  are recomputed at a time in the backward pass;
- the fp32 gradient of the logits (the backward's largest transient) and, on a CPU, the process
  itself (Python, torch: :data:`minigpt4.models.memory.RUNTIME_BYTES`).

The frozen vision side runs without saving anything for backward (no input or weight of it
needs a gradient), and its transients are freed before the LLM's backward, where the peak is.
A sample's length is the longest possible: BOS, the longest training prompt, the image tokens
and ``max_txt_len`` text tokens.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from minigpt4.common.utils import resolve_path

if TYPE_CHECKING:
    import torch

    from minigpt4.models.model_config import MiniGPT4Config

# torch and the model modules are imported where they are used, so that the command's --help
# answers before torch is imported (as every entry point's does).

logger = logging.getLogger(__name__)

MIB = 1024**2
# The LLaMA-1 / Vicuna / LLaMA-2 shapes by name, for configs whose LLM folder is not there yet.
LLM_SIZES = {
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, vocab_size=32000),
    "13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                num_attention_heads=40, vocab_size=32000),
}  # fmt: skip
# Without a tokenizer, a prompt's token count from its length (LLaMA's English runs 3-4
# characters a token; 3 errs on the long side).
CHARS_PER_TOKEN = 3
ADAMW_STATES = 2  # exp_avg, exp_avg_sq
FP32_BYTES = 4
_IMAGE_PLACEHOLDER = "<ImageHere>"


@dataclass(frozen=True)
class TrainingMemory:
    """One estimate; every field in bytes but the counts."""

    device_kind: str
    mode: str
    batch_size: int
    tokens: int  # per sample
    grad_checkpoint: bool
    weights: float
    trainable_params: int
    optimizer: float  # the trainable parameters' fp32 gradients and AdamW state
    activations: float  # saved for backward, for the batch, plus the logits' gradient
    runtime: float

    @property
    def total(self) -> float:
        return self.weights + self.optimizer + self.activations + self.runtime

    def describe(self) -> str:
        """The estimate in one line."""
        ckpt = "on" if self.grad_checkpoint else "off"
        return (
            f"Training memory estimate ({self.device_kind}, {self.mode}, batch {self.batch_size}, "
            f"{self.tokens} tokens/sample, LLM gradient checkpointing {ckpt}): peak "
            f"{self.total / MIB:,.0f} MiB = weights {self.weights / MIB:,.0f} + gradients and "
            f"AdamW state of {self.trainable_params:,} trainable parameters "
            f"{self.optimizer / MIB:,.0f} + activations {self.activations / MIB:,.0f}"
            + (f" + process {self.runtime / MIB:,.0f}" if self.runtime else "")
        )


# --- the LLM ----------------------------------------------------------------------------------


def llm_config(config: MiniGPT4Config, llm_size: str | None = None) -> Any:
    """The LLM's transformers config: from ``model.llama_model``'s ``config.json``, or the
    named size of :data:`LLM_SIZES` (a folder that is not there yet)."""
    from transformers import AutoConfig, LlamaConfig

    folder = resolve_path(config.llama_model)
    if llm_size is None and os.path.isfile(os.path.join(folder, "config.json")):
        return AutoConfig.from_pretrained(folder, local_files_only=True)
    if llm_size not in LLM_SIZES:
        raise ValueError(
            f"model.llama_model {config.llama_model!r} has no config.json to size the LLM from "
            f"(the train_memory command takes --llm-size {'|'.join(LLM_SIZES)})"
        )
    return LlamaConfig(**LLM_SIZES[llm_size])


def _llm_shapes(config: MiniGPT4Config, llm: Any, llm_size: str | None) -> dict[str, tuple]:
    import torch

    from minigpt4.models import memory

    folder = resolve_path(config.llama_model)
    if llm_size is None and memory.llm_weight_files(folder):
        return memory.llm_tensor_shapes(folder)
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(llm)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _saved_bytes(llm: Any, layers: int, batch: int, tokens: int, dtype, checkpoint: bool) -> int:
    """Bytes autograd saves for backward in one training forward of the LLM with ``layers``
    decoder layers, on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    from minigpt4.models.mini_gpt4 import causal_lm_loss

    values = {**llm.to_dict(), "num_hidden_layers": layers, "use_cache": False}
    if isinstance(values.get("layer_types"), list):  # one entry per layer (Qwen2, Gemma, ...)
        values["layer_types"] = values["layer_types"][:layers]
    llm = llm.__class__.from_dict(values)
    llm._attn_implementation = "eager"
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(llm).to(dtype)
        model.requires_grad_(False)
        if checkpoint:
            model.activation_checkpointing_enable({"use_reentrant": False})
            model.train()
        embeds = torch.empty(batch, tokens, llm.hidden_size, dtype=dtype, requires_grad=True)
        # A 4-D mask is used as it is: transformers reads no values of it (meta has none).
        mask = torch.zeros(batch, 1, tokens, tokens, dtype=dtype)
        saved: dict[int, torch.Tensor] = {}

        def keep(tensor: torch.Tensor) -> torch.Tensor:
            saved[id(tensor)] = tensor  # held, so an id is never reused
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            logits = model(inputs_embeds=embeds, attention_mask=mask).logits
            causal_lm_loss(logits, torch.zeros(batch, tokens, dtype=torch.long))
    return sum(t.numel() * t.element_size() for t in saved.values())


def llm_activation_bytes(
    llm: Any, tokens: int, dtype: torch.dtype, checkpoint: bool
) -> tuple[float, float]:
    """``(per decoder layer, the rest)``: bytes saved for backward per sample of ``tokens``."""
    per_sample = {
        layers: _saved_bytes(llm, layers, 2, tokens, dtype, checkpoint)
        - _saved_bytes(llm, layers, 1, tokens, dtype, checkpoint)
        for layers in (1, 2)
    }
    layer = per_sample[2] - per_sample[1]
    return float(layer), float(per_sample[1] - layer)


# --- the sample ---------------------------------------------------------------------------------


def _training_prompts(config: MiniGPT4Config) -> list[str]:
    """The training prompts as the model formats them (read here without drawing one, so the
    estimate leaves the random state of a run alone)."""
    if not config.prompt_path:
        return []
    with open(resolve_path(config.prompt_path), encoding="utf-8") as f:
        lines = [line for line in f.read().splitlines() if _IMAGE_PLACEHOLDER in line]
    return [config.prompt_template.format(line) for line in lines]


def _prompt_tokens(config: MiniGPT4Config) -> int:
    texts = [p.replace(_IMAGE_PLACEHOLDER, "") for p in _training_prompts(config)]
    if not texts:
        return 0
    folder = resolve_path(config.llama_model)
    if os.path.isdir(folder):
        from minigpt4.models.tokenizer import TOKENIZER_FILE, LlamaTokenizer

        if os.path.isfile(os.path.join(folder, TOKENIZER_FILE)):
            tokenizer = LlamaTokenizer.from_folder(folder)
            return max(len(tokenizer.encode(t)) for t in texts)
    return max(math.ceil(len(t) / CHARS_PER_TOKEN) for t in texts)


def sample_tokens(config: MiniGPT4Config) -> int:
    """The longest sample: BOS, the longest training prompt, the image tokens, the text."""
    image = config.adapter.tokens_per_image(config)
    return 1 + _prompt_tokens(config) + image + config.max_txt_len


# --- the estimate -------------------------------------------------------------------------------


def _under(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def estimate(
    model_cls: type,
    config: MiniGPT4Config,
    device_kind: str,
    batch_size: int,
    llm_size: str | None = None,
) -> TrainingMemory:
    """The peak memory of one training step of ``config`` at ``batch_size`` (see the module
    docstring for the parts)."""
    import torch

    from minigpt4.models import lora, memory
    from minigpt4.models.precision import Precision
    from minigpt4.models.trainable import trainable_names

    llm = llm_config(config, llm_size)
    precision = Precision.of(config, device_kind)
    with torch.device("meta"):
        meta_model = model_cls(config, llm.hidden_size)
    shapes = _llm_shapes(config, llm, llm_size)
    weights = memory.vision_bytes(meta_model, precision) + memory.llm_bytes(shapes, precision)
    weights += memory.upcast_buffer_bytes(meta_model, shapes, precision)

    names = trainable_names(config)
    vision_params = sum(p.numel() for p in meta_model.parameters() if p.requires_grad)
    llm_params = sum(
        math.prod(shape) for key, shape in shapes.items() if _under(f"llama_model.{key}", names)
    )
    adapter_params = lora.param_count(shapes, config.lora_r)  # LoRA weights, all trained
    weights += adapter_params * precision.llm.itemsize
    trainable = vision_params + llm_params + adapter_params
    # fp32 gradients and AdamW state; trained LLM weights also get an fp32 master copy.
    optimizer = trainable * (1 + ADAMW_STATES) * FP32_BYTES
    optimizer += llm_params * (FP32_BYTES - precision.llm.itemsize)

    tokens = sample_tokens(config)
    checkpoint = config.use_grad_checkpoint_llm
    layer, rest = llm_activation_bytes(llm, tokens, precision.llm, checkpoint)
    activations = batch_size * (llm.num_hidden_layers * layer + rest)
    if checkpoint:  # the backward pass recomputes one layer at a time
        full_layer, _ = llm_activation_bytes(llm, tokens, precision.llm, checkpoint=False)
        activations += batch_size * full_layer
    activations += batch_size * tokens * llm.vocab_size * FP32_BYTES  # the logits' gradient
    runtime = memory.RUNTIME_BYTES if device_kind != "cuda" else 0.0
    return TrainingMemory(
        device_kind,
        memory.mode_name(config, device_kind),
        batch_size,
        tokens,
        checkpoint,
        weights,
        trainable,
        optimizer,
        activations,
        runtime,
    )


def run_batch_size(cfg: Any) -> int:
    """The largest per-process batch of a config's datasets (``datasets.<name>.batch_size``,
    else ``run.batch_size_train``)."""
    default = cfg.run_cfg.get("batch_size_train")
    sizes = [
        (block or {}).get("batch_size") or default for block in (cfg.datasets_cfg or {}).values()
    ]
    sizes = [int(s) for s in sizes if s is not None] or ([int(default)] if default else [])
    if not sizes:
        raise ValueError("no batch size: set run.batch_size_train or give --batch-size")
    return max(sizes)


def config_of(cfg: Any, **overrides: Any) -> tuple[type, MiniGPT4Config]:
    """The model class and typed model config of a ``Config``, with ``overrides``."""
    from omegaconf import OmegaConf

    from minigpt4.common.registry import registry
    from minigpt4.models.model_config import MiniGPT4Config

    model_cls = registry.get_model_class(cfg.model_cfg.arch)
    section = {**OmegaConf.to_container(cfg.model_cfg, resolve=True), **overrides}
    return model_cls, MiniGPT4Config.from_cfg(section, **model_cls.CONFIG_DEFAULTS)


def log_training_memory(cfg: Any, device_kind: str) -> None:
    """Log :func:`estimate` for a training config in one line (train.py, before the model
    loads); a config whose LLM cannot be sized yet logs why instead."""
    model_cls, config = config_of(cfg)
    try:
        result = estimate(model_cls, config, device_kind, run_batch_size(cfg))
    except (OSError, ValueError) as err:
        logger.info("Training memory estimate skipped: %s", err)
        return
    logger.info(result.describe())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cfg-path", required=True, help="a training config")
    parser.add_argument("--options", nargs="+", help="overrides, as train.py takes them")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument(
        "--dtype",
        help="the mode: on cuda fp16, bf16, 8bit or 4bit; on cpu bf16, fp32, 8bit or 4bit "
        "(default: the config's)",
    )
    parser.add_argument("--batch-size", type=int, help="per process (default: the config's)")
    parser.add_argument(
        "--llm-size", choices=sorted(LLM_SIZES), help="size the LLM by name, not from its folder"
    )
    parser.add_argument(
        "--grad-checkpoint",
        action="store_true",
        help="with model.use_grad_checkpoint_llm (default: the config's)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> TrainingMemory:
    args = parse_args(argv)  # before the imports below: --help answers without torch
    from minigpt4.common.config import Config
    from minigpt4.models import memory

    cfg = Config(argparse.Namespace(cfg_path=args.cfg_path, options=args.options))
    overrides: dict[str, Any] = {"device": args.device}
    if args.dtype:
        modes = memory.MODES[args.device]
        if args.dtype not in modes:
            raise SystemExit(f"--dtype on {args.device} is one of {', '.join(modes)}")
        overrides.update(modes[args.dtype][0])
    if args.grad_checkpoint:
        overrides["use_grad_checkpoint_llm"] = True
    model_cls, config = config_of(cfg, **overrides)
    batch = args.batch_size or run_batch_size(cfg)
    result = estimate(model_cls, config, args.device, batch, args.llm_size)
    parts = dataclasses.asdict(result) | {"total": result.total}
    sys.stdout.write(result.describe() + "\n" + json.dumps(parts) + "\n")
    return result


if __name__ == "__main__":
    main()
