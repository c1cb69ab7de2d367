"""Which dtype each part of MiniGPT-4 is stored and computed in, and building parts in it.

- CUDA (the original): the ViT's Linear/Conv weights in fp16 when ``vit_precision: fp16`` (the
  rest of it fp32), Q-Former and ``llama_proj`` fp32, everything run under autocast
  (``autocast_dtype``), the LLM stored in ``autocast_dtype``.
- CPU: no autocast. ViT, Q-Former and LLM are stored in ``cpu_dtype`` (bf16, or ``auto`` which
  stores bf16 too: a 7B model fits 16 GB; fp32 for exact numerics, as the tiny model and the
  parity tests use) and compute in it, except that with ``auto`` the large matrix products
  compute in fp32 where bf16 ones are emulated (:mod:`minigpt4.models.cpu_choice`).
  ``ln_vision`` (it computes in fp32), ``llama_proj`` (trained: an fp32 master weight) and the
  loss stay fp32, as in the original.
- An 8-bit LLM on CUDA is fp16 wherever it is not int8: bitsandbytes' int8 matmul quantizes
  fp16 inputs (the original's ``torch_dtype=float16``). On CPU it stays in ``cpu_dtype``:
  bitsandbytes casts the activations to fp16 only to quantize them, and computes the rest (its
  outlier columns, the backward pass) in the input dtype, where fp16 matrix products run about
  10x slower than bf16 on a CPU without AVX512-FP16 (see
  :mod:`minigpt4.models.loading.quantized` for the warning that cast would log on every call).
  A 4-bit LLM computes in the LLM dtype.

The vision side is built on the meta device and allocated here once, directly in its dtypes
(:func:`materialize`), so no random weights are computed and no fp32 copy exists before the
files are read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from minigpt4.models.base_model import AUTOCAST_DTYPES
from minigpt4.models.cpu_choice import CpuMatmul, choose
from minigpt4.models.model_config import MiniGPT4Config

CPU_DTYPES = {"auto": torch.bfloat16, "bf16": torch.bfloat16, "fp32": torch.float32}
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
# What bitsandbytes' int8 matmul computes in on CUDA.
INT8_LLM_DTYPE = torch.float16
# The ViT modules whose weights vit_precision fp16 casts.
_HALF_IN_VIT = (nn.Conv1d, nn.Conv2d, nn.Linear)


def run_device_kind(config: MiniGPT4Config) -> str:
    """``"cpu"`` or ``"cuda"``: ``model.device``, or CUDA when there is one."""
    return torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu")).type


@dataclass(frozen=True)
class Precision:
    """The dtypes of one run (see the module docstring for the rules)."""

    device_kind: str
    vision: torch.dtype  # ViT and Q-Former tensors (CUDA: see vit_half_linear)
    vit_half_linear: bool  # CUDA + vit_precision fp16: ViT Linear/Conv weights in fp16
    llm: torch.dtype  # the LLM's unquantized tensors and its activations
    quantization: str | None
    autocast: torch.dtype | None  # CUDA only
    has_qformer: bool = True  # the image adapter (only for what the log lines name)
    cpu_matmul: CpuMatmul | None = None  # CPU only: the dtype of large matrix products

    @classmethod
    def of(cls, config: MiniGPT4Config, device_kind: str) -> Precision:
        quantization = config.quantization
        matmul = None
        if device_kind == "cuda":
            vision, autocast = torch.float32, AUTOCAST_DTYPES[config.autocast_dtype]
            llm = autocast
        else:
            vision, autocast = CPU_DTYPES[config.cpu_dtype], None
            llm = vision
            matmul = choose(config.cpu_dtype, getattr(config, "cpu_matmul", "auto"))
        if quantization == "8bit" and device_kind == "cuda":
            llm = INT8_LLM_DTYPE
        half_vit = device_kind == "cuda" and config.vit_precision == "fp16"
        has_qformer = getattr(config, "image_adapter", "qformer") == "qformer"
        return cls(device_kind, vision, half_vit, llm, quantization, autocast, has_qformer, matmul)

    def frozen_vision(self) -> str:
        """The vision side's dtypes in words: "ViT and Q-Former bf16", or "ViT bf16" without one."""
        if self.device_kind == "cuda":
            vit = "fp16 Linear/Conv" if self.vit_half_linear else "fp32"
            return f"ViT {vit}, Q-Former fp32" if self.has_qformer else f"ViT {vit}"
        parts = "ViT and Q-Former" if self.has_qformer else "ViT"
        return f"{parts} {DTYPE_NAMES[self.vision]}"

    def vision_tensor_dtype(self, owner: nn.Module, in_vit: bool) -> torch.dtype:
        """Dtype of a floating tensor of module ``owner`` in the ViT or the Q-Former."""
        if in_vit and self.vit_half_linear and isinstance(owner, _HALF_IN_VIT):
            return torch.float16  # exactly what the original's convert_weights_to_fp16 casts
        return self.vision

    def dtype_rule(self, model: nn.Module) -> Callable[[nn.Module], torch.dtype]:
        """``owner module -> dtype`` of the floating tensors of a MiniGPT-4 vision side:
        fp32 for ``ln_vision`` and ``llama_proj``, the rules above for the ViT and Q-Former."""
        fp32 = {id(m) for part in (model.ln_vision, model.llama_proj) for m in part.modules()}
        vit = {id(m) for m in model.visual_encoder.modules()}

        def dtype_of(owner: nn.Module) -> torch.dtype:
            if id(owner) in fp32:
                return torch.float32
            return self.vision_tensor_dtype(owner, id(owner) in vit)

        return dtype_of

    def describe(self) -> str:
        """One log line: what runs in which dtype, and the config keys that choose it."""
        llm = {"8bit": "8-bit int8", "4bit": "4-bit NF4"}.get(self.quantization, "")
        llm = f"{llm} compute {DTYPE_NAMES[self.llm]}" if llm else DTYPE_NAMES[self.llm]
        if self.device_kind == "cuda":
            return (
                f"Running on cuda: {self.frozen_vision()}, LLM {llm}, under "
                f"{DTYPE_NAMES[self.autocast]} autocast (model.vit_precision, "
                "model.autocast_dtype, model.llm_quantization / model.low_resource)"
            )
        return (
            f"Running on cpu: {self.frozen_vision()}, LLM {llm}; "
            "ln_vision, llama_proj and the loss fp32 (model.cpu_dtype: auto, bf16 or fp32, "
            "model.llm_quantization / model.low_resource)"
        )


def materialize(module: nn.Module, dtype_of: Callable[[nn.Module], torch.dtype]) -> None:
    """Give every meta tensor of ``module`` CPU storage, in ``dtype_of(owning module)`` for
    floating tensors (integer buffers keep their dtype). Values are left uninitialised: the
    weight files fill them. Non-persistent buffers (no file holds them) are set to zero: the
    only ones in the vision side are EVA's ``k_bias``, zero by definition.
    """
    for owner in module.modules():
        for name, param in list(owner._parameters.items()):
            if param is not None and param.is_meta:
                data = torch.empty(param.shape, dtype=_dtype(param, owner, dtype_of))
                owner._parameters[name] = nn.Parameter(data, requires_grad=param.requires_grad)
        for name, buf in list(owner._buffers.items()):
            if buf is not None and buf.is_meta:
                data = torch.empty(buf.shape, dtype=_dtype(buf, owner, dtype_of))
                if name in owner._non_persistent_buffers_set:
                    data.zero_()
                owner._buffers[name] = data


def _dtype(tensor: torch.Tensor, owner: nn.Module, dtype_of) -> torch.dtype:
    return dtype_of(owner) if tensor.is_floating_point() else tensor.dtype
