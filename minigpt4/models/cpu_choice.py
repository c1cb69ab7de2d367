"""Which dtype the CPU's matrix products of bf16 weights compute in, per machine and per phase.

bf16 matrix products are fast only where the CPU has bf16 dot-product instructions
(AVX512_BF16 or AMX); elsewhere (AVX2-only CPUs, AVX-512 without BF16) oneDNN emulates them,
and a product of many rows (the encode of an image, the prefill of a prompt) runs 2.5-4x slower
than the same product in fp32 (docs/benchmarks.md). A product of a few rows (decode, one token
at a time) reads its weights once and is bound by memory bandwidth, where bf16 (half the bytes)
stays the faster one everywhere.

So, with ``model.cpu_dtype: auto`` the weights stay bf16 in memory, and where bf16 is not
native every frozen Linear computes a product of at least :data:`UPCAST_MIN_ROWS` rows in fp32,
its weight converted on the fly (:mod:`minigpt4.models.upcast_linear`). ``model.cpu_matmul``
overrides the choice. The CPU's support is asked of torch's cpuinfo queries and of the
``ONEDNN_MAX_CPU_ISA`` limit that oneDNN honours (the library that runs bf16 products on CPU),
not measured: the answer is instantaneous, stable from run to run on a loaded machine, and
follows the variable that emulates an older CPU.

Where bf16 is native through AVX512_BF16 (without AMX), oneDNN's product of a single row reads
the weight at about half the memory bandwidth that torch's own bf16 kernel reaches (a 7B Linear
at one row: 8 against 4 ms), so one-row products (decoding one answer) of frozen bf16 weights
skip oneDNN there (:mod:`minigpt4.models.one_row_linear`); two rows and more stay with oneDNN,
which is faster from two rows on. On AMX machines this was not measured, and nothing changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

CPU_MATMUL_NAMES = ("auto", "bf16", "fp32")
# model.cpu_quantized: the kernels of an 8-bit or 4-bit LLM's layers on CPU: bitsandbytes' own,
# torch's weight-only int8 / int4 ones, or auto (minigpt4.models.loading.quantized)
CPU_QUANTIZED_KERNELS = ("auto", "bitsandbytes", "torch")
# The fewest rows (tokens) for which an fp32 product with the bf16 weight converted first beats
# the emulated bf16 product (measured at the 7B's and ViT-g's Linear shapes, one thread: slower
# at 8 rows, faster from 16 on).
UPCAST_MIN_ROWS = 16
ONEDNN_ISA_ENV = "ONEDNN_MAX_CPU_ISA"
# oneDNN's ISA names in increasing order of what they allow, up to the first one with native
# bf16 products; names after it (AMX, AVX10, ALL, DEFAULT) allow it too.
_ONEDNN_WITHOUT_BF16 = (
    "SSE41",
    "AVX",
    "AVX2",
    "AVX2_VNNI",
    "AVX2_VNNI_2",
    "AVX512_CORE",
    "AVX512_CORE_VNNI",
)
_OVERRIDE = "model.cpu_matmul: bf16 or fp32 overrides it"
_FP32_WEIGHTS = "model.cpu_dtype is fp32"


@dataclass(frozen=True)
class CpuMatmul:
    """The choice for one run: ``upcast`` products of ``min_rows`` rows or more to fp32;
    ``one_row_aten``: one-row bf16 products in torch's own kernel instead of oneDNN's."""

    upcast: bool
    reason: str
    min_rows: int = UPCAST_MIN_ROWS
    one_row_aten: bool = False

    def describe(self) -> str:
        """One log line: what was chosen, why, and the key that overrides it."""
        if self.upcast:
            what = (
                f"CPU matmuls: fp32 for products of {self.min_rows} rows or more (encode, "
                "prefill; bf16 weights converted per call), bf16 below (decode)"
            )
        elif self.reason == _FP32_WEIGHTS:
            return f"CPU matmuls: fp32 ({_FP32_WEIGHTS})"
        else:
            what = "CPU matmuls: in the weights' dtype"
        if self.one_row_aten:
            what += " (one-row products in torch's own kernel: faster than oneDNN's here)"
        return f"{what}: {self.reason} ({_OVERRIDE})"


def native_bf16_matmul() -> tuple[bool, str]:
    """Whether bf16 matrix products run on native instructions here, and why in words."""
    limit = os.environ.get(ONEDNN_ISA_ENV, "").strip().upper()
    if limit in _ONEDNN_WITHOUT_BF16:
        return False, f"{ONEDNN_ISA_ENV}={limit} rules out native bf16 products"
    if torch.cpu._is_amx_tile_supported():
        return True, "this CPU has AMX (native bf16 products)"
    if torch.cpu._is_avx512_bf16_supported():
        return True, "this CPU has AVX512_BF16 (native bf16 products)"
    return False, "this CPU has neither AVX512_BF16 nor AMX: bf16 products are emulated"


def one_row_faster_in_aten() -> bool:
    """Whether oneDNN runs bf16 products natively through AVX512_BF16 without AMX: there its
    one-row product is the slower one (measured on an AMD EPYC Zen 4)."""
    native, _ = native_bf16_matmul()
    return native and not torch.cpu._is_amx_tile_supported()


def choose(cpu_dtype: str, cpu_matmul: str) -> CpuMatmul:
    """The choice for ``model.cpu_dtype`` / ``model.cpu_matmul`` on this machine."""
    if cpu_dtype == "fp32":
        return CpuMatmul(False, _FP32_WEIGHTS)
    one_row = one_row_faster_in_aten()
    if cpu_matmul != "auto":
        upcast = cpu_matmul == "fp32"
        reason = f"model.cpu_matmul is {cpu_matmul}"
        return CpuMatmul(upcast, reason, one_row_aten=one_row and not upcast)
    if cpu_dtype == "bf16":
        return CpuMatmul(False, "model.cpu_dtype is bf16", one_row_aten=one_row)
    native, why = native_bf16_matmul()
    return CpuMatmul(not native, why, one_row_aten=one_row)
