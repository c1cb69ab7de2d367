"""bitsandbytes LLMs, quiet and correct: how to load one, its log noise, and the 4-bit CPU
kernel's weight layout.

- :func:`load_kwargs`: the ``from_pretrained`` arguments of ``model.llm_quantization`` (8-bit, or
  4-bit NF4 with double quantization), placed on the GPU of ``model.device_8bit`` or the CPU.
- On import, bitsandbytes' CPU backend tries to fetch a kernel from the Hugging Face hub through
  the ``kernels`` package and, when that is absent, logs a warning that asks to install it. This
  project does not use that kernel (it runs offline), so :func:`quiet_bitsandbytes` drops that
  message; everything else bitsandbytes logs still shows.
- Which kernels an 8-bit or 4-bit LLM on CPU runs depends on the CPU, and bitsandbytes does not
  say which: the load chooses and logs it in one line (:func:`choose_cpu_kernels`). An 8-bit LLM
  multiplies weight-only (:mod:`minigpt4.models.int8_linear`), its prefills through
  bitsandbytes' LLM.int8() where its int8 kernel runs (AVX-512), whose per-call note on casting
  the activations to fp16 to quantize them is then dropped (3,584 times per 16 tokens of a 7B
  answer; they stay bf16 on purpose, :mod:`minigpt4.models.precision`). On a CPU with AVX512-BF16,
  bitsandbytes repacks each 4-bit weight into the layout of its fused kernel on the layer's
  first inference call (about 14 s for a 7B LLM, silently). Here it is done once, announced
  and timed (:func:`pack_4bit_for_cpu_inference`: at load time for inference, and before any
  answer). The packed layout has no backward pass (gradients through it are silently lost), so
  a training forward first restores bitsandbytes' own layout (:func:`unpack_4bit_for_training`).
  Without AVX512-BF16 (e.g. an AVX2-only CPU) bitsandbytes has only a generic path, which
  dequantizes the whole weight on each call; the layers move to torch's int4 kernel instead
  (:mod:`minigpt4.models.int4_linear`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from torch import nn

from minigpt4.models import memory

logger = logging.getLogger(__name__)

_BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
_KERNELS_HINT = "pip install kernels"
_INT8_LOGGER = "bitsandbytes.autograd._functions"
_INT8_CAST_NOTE = "MatMul8bitLt: inputs will be cast from"
# bitsandbytes' AVX512-BF16 CPU kernel repacks 4-bit weights in blocks of 32 output rows, and
# input columns in whole quantization blocks; it asserts on layers that do not fit (tiny LLMs,
# e.g. an MLP of width 172). Full-size LLaMA layers always fit.
_BNB_CPU_PACK_ROWS = 32


class _DropMessage(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in str(record.msg)


def load_kwargs(config: Any, device_kind: str, dtype: torch.dtype) -> dict[str, Any]:
    """``device_map`` and ``quantization_config`` for ``from_pretrained`` of an LLM quantized as
    ``config.quantization`` says (``8bit`` or ``4bit``), computing in ``dtype``."""
    from transformers import BitsAndBytesConfig

    on_cuda = device_kind == "cuda"
    kwargs: dict[str, Any] = {"device_map": {"": config.device_8bit if on_cuda else "cpu"}}
    if config.quantization == "8bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    else:
        # Double quantization stores the block scales in 8 bits instead of fp32 (0.3 GB less
        # for a 7B LLM while it loads, and on CUDA for good; the CPU kernel's repack expands
        # them to bf16).
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
        )
    return kwargs


def _drop(logger_name: str, text: str) -> None:
    target = logging.getLogger(logger_name)
    if not any(isinstance(f, _DropMessage) and f.text == text for f in target.filters):
        target.addFilter(_DropMessage(text))


def quiet_bitsandbytes() -> None:
    """Drop bitsandbytes' ``pip install kernels`` hint (call before bitsandbytes is imported)."""
    _drop(_BNB_CPU_LOGGER, _KERNELS_HINT)


def _linear4bit_layers(llm: nn.Module | None) -> list[nn.Module]:
    if llm is None or not getattr(llm, "is_loaded_in_4bit", False):
        return []
    import bitsandbytes as bnb

    return [m for m in llm.modules() if isinstance(m, bnb.nn.Linear4bit)]


def _is_packed(layer: nn.Module) -> bool:
    return bool(getattr(layer.weight.quant_state, "packing_format_for_cpu", False))


def choose_cpu_kernels(llm: nn.Module, config: Any, large_dtype: torch.dtype | None) -> None:
    """Decide once, while loading, which kernels the layers of an 8-bit or 4-bit LLM on CPU
    run (``config.cpu_quantized``: ``auto``, ``bitsandbytes`` or ``torch``), products of many
    rows in ``large_dtype`` where torch's are chosen (None: the activations' dtype), and log it
    in one line: bitsandbytes does not say which of its paths runs, and their speed differs by
    CPU by 20-50x (docs/benchmarks.md)."""
    if config.quantization == "8bit":
        choose_8bit_cpu_kernels(llm, large_dtype, config.cpu_quantized)
    else:
        choose_4bit_cpu_kernels(llm, large_dtype, config.cpu_quantized)


def bnb_int8_kernel_on_cpu() -> bool:
    """Whether bitsandbytes multiplies int8 by int8 on this CPU with a fast kernel: it registers
    one (``torch._int_mm``, oneDNN's int8 GEMM) only where torch dispatches AVX-512 kernels;
    elsewhere its fallback computes LLM.int8() in plain loops."""
    import bitsandbytes  # noqa: F401  (registers its kernels)

    has_kernel = torch._C._dispatch_has_kernel_for_dispatch_key
    return has_kernel("bitsandbytes::int8_linear_matmul", "CPU")


def choose_8bit_cpu_kernels(llm: nn.Module, large_dtype: torch.dtype | None, choice: str) -> None:
    """``bitsandbytes``: its LLM.int8() for every product. ``torch``: weight-only int8 products
    (:mod:`minigpt4.models.int8_linear`). ``auto``: weight-only, but where bitsandbytes' int8
    kernel runs, LLM.int8() for products of many rows without gradients (prefill). At one row
    through a 7B MLP weight, LLM.int8() takes 2.6 ms with its kernel (AVX-512) and 126 ms
    without (AVX2), torch's weight-only kernel 3.5 and 5.1 ms; decoding a 7B answer on two
    Zen 4 cores, 2.05 against 2.95 tokens/s."""
    from minigpt4.models.int8_linear import DEQUANTIZE_MIN_ROWS, int8_weight_linears

    fast = bnb_int8_kernel_on_cpu()
    if choice == "bitsandbytes":
        _drop(_INT8_LOGGER, _INT8_CAST_NOTE)
        logger.info("8-bit LLM on CPU: bitsandbytes' LLM.int8() (model.cpu_quantized is "
                    "bitsandbytes)")  # fmt: skip
        return
    int8_prefill = choice == "auto" and fast
    count = int8_weight_linears(llm, large_dtype, int8_prefill)
    many = "fp32" if large_dtype else "the compute dtype"
    if int8_prefill:
        _drop(_INT8_LOGGER, _INT8_CAST_NOTE)
        many = (f"bitsandbytes' LLM.int8() for prefills (its int8 kernel runs on this CPU), "
                f"the weight converted to {many} for training")  # fmt: skip
    else:
        many = f"the weight converted to {many}"
    logger.info(
        "8-bit LLM on CPU: weight-only int8 products for its %d 8-bit layers (torch's int8 "
        "kernel below %d rows; from there on %s): %s",
        count,
        DEQUANTIZE_MIN_ROWS,
        many,
        "model.cpu_quantized is torch"
        if choice == "torch"
        else (
            "faster than bitsandbytes' LLM.int8() on this CPU (model.cpu_quantized: "
            "bitsandbytes keeps it)"
        ),
    )


def choose_4bit_cpu_kernels(llm: nn.Module, large_dtype: torch.dtype | None, choice: str) -> None:
    """bitsandbytes gives each layer its packed AVX512-BF16 kernel when the CPU has that
    instruction set (its own check, ``has_avx512bf16``, made when the layer is built, is
    ``support_avx512bf16_for_cpu``); ``auto`` keeps it there. Without it, bitsandbytes'
    generic path dequantizes the whole weight on each call, so ``auto`` gives the layers that
    torch's int4 kernel takes to it (:mod:`minigpt4.models.int4_linear`, products of many rows
    in ``large_dtype``). Layers that no fast kernel can tile take the generic path (the packed
    kernel asserts on them).
    """
    flags = [layer.support_avx512bf16_for_cpu for layer in _linear4bit_layers(llm)]
    if not flags:
        return
    native = any(flags)
    if choice == "torch" or (choice == "auto" and not native):
        why = (
            "model.cpu_quantized is torch"
            if choice == "torch"
            else "this CPU has no AVX512-BF16, which bitsandbytes' packed kernel needs"
        )
        _torch_int4(llm, large_dtype, why)  # holding no layer here: each is freed as it goes
    layers = _linear4bit_layers(llm)
    for layer in layers:
        blocksize = layer.weight.quant_state.blocksize
        if layer.out_features % _BNB_CPU_PACK_ROWS or layer.in_features % blocksize:
            layer.support_avx512bf16_for_cpu = False
        if choice != "auto":
            layer.support_avx512bf16_for_cpu &= choice == "bitsandbytes"
    packed = sum(layer.support_avx512bf16_for_cpu for layer in layers)
    if packed:
        logger.info(
            "4-bit LLM on CPU: bitsandbytes' packed AVX512-BF16 kernel for %d of %d layers (this "
            "CPU has AVX512-BF16; they are repacked once, at load time), its generic path for "
            "the %d whose shapes that kernel cannot tile",
            packed,
            len(layers),
            len(layers) - packed,
        )
    elif layers and choice == "bitsandbytes":
        logger.info(
            "4-bit LLM on CPU: bitsandbytes' generic 4-bit path for all %d layers (dequantize, "
            "then a matmul): this CPU has no AVX512-BF16, which its packed kernel needs, and "
            "model.cpu_quantized is bitsandbytes; the weights keep their layout",
            len(layers),
        )


def _torch_int4(llm: nn.Module, large_dtype: torch.dtype | None, why: str) -> None:
    from minigpt4.models import int4_linear

    start = time.perf_counter()
    converted, total = int4_linear.torch_int4_linears(llm, large_dtype)
    layout = ""
    if not int4_linear.layout_understood():
        capability = torch.backends.cpu.get_cpu_capability()
        layout = f"; torch's packed int4 layout for {capability} is not one this project reads"
    logger.info(
        "4-bit LLM on CPU: torch's int4 kernel for %d of %d layers (%s; their NF4 weights "
        "requantized to int4 in groups of %d, once, in %.1f s%s), bitsandbytes' generic path "
        "for the other %d (model.cpu_quantized: bitsandbytes keeps every layer NF4)",
        converted,
        total,
        why,
        int4_linear.GROUP_SIZE,
        time.perf_counter() - start,
        layout,
        total - converted,
    )


def pack_4bit_for_cpu_inference(llm: nn.Module | None) -> None:
    """Repack every 4-bit layer of a CPU LLM for bitsandbytes' fused kernel, now (no-op when
    there is nothing to pack). Each layer is run once on a zero input: bitsandbytes packs a
    layer on its first inference call."""
    todo = [
        layer
        for layer in _linear4bit_layers(llm)
        if layer.weight.device.type == "cpu"
        and layer.support_avx512bf16_for_cpu
        and not _is_packed(layer)
    ]
    if not todo:
        return
    logger.info("4-bit LLM: repacking %d layers for the CPU kernel (once)", len(todo))
    start = time.perf_counter()
    with torch.no_grad():
        for done, layer in enumerate(todo, 1):
            was_training = layer.training
            layer.eval()
            layer(torch.zeros(1, layer.in_features, dtype=layer.compute_dtype or torch.bfloat16))
            layer.train(was_training)
            if done % memory.TRIM_EVERY_LAYERS == 0:
                memory.release_freed_memory()
    memory.release_freed_memory()
    logger.info("4-bit LLM: repacked in %.1f s", time.perf_counter() - start)


def unpack_4bit_for_training(llm: nn.Module | None) -> None:
    """Restore bitsandbytes' own 4-bit layout on packed layers (which have no backward)."""
    packed = [layer for layer in _linear4bit_layers(llm) if _is_packed(layer)]
    if not packed:
        return
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

    logger.info("4-bit LLM: unpacking %d layers from the CPU inference layout for training",
                len(packed))  # fmt: skip
    start = time.perf_counter()
    for layer in packed:
        weight = layer.weight
        weight.data, state = _convert_weight_packed_for_cpu_inverse(weight.data, weight.quant_state)
        if state.absmax.ndim == 2:
            # bitsandbytes 0.50 restores only a double-quantized absmax; a plain one stays in the
            # packed kernel's [K / blocksize, N] bf16 layout. Back to its [N * K / blocksize]
            # fp32 layout, with the bf16 values the packed kernel computed with.
            state.absmax = state.absmax.T.reshape(-1).float()
        weight.quant_state = layer.quant_state = state
    memory.release_freed_memory()
    logger.info("4-bit LLM: unpacked in %.1f s", time.perf_counter() - start)
