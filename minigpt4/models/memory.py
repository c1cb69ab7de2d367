"""Memory preflight: what a mode needs, from the files and the dtypes, against what the machine has.

Called by :func:`minigpt4.models.loading.model.load_model` before anything heavy is read. The
estimate counts every tensor the run keeps: the vision side (sizes from the config, dtypes from
:mod:`minigpt4.models.precision`), the LLM (shapes read from the headers of its weight files;
int8 or NF4 for the linear layers of the decoder when quantized, its own dtype for the rest),
plus :data:`RUNTIME_BYTES` for Python, torch and the activations of one answer. When the chosen
mode does not fit, one :class:`NotEnoughMemoryError` lists the modes that would fit and the config
keys that select them. ``MINIGPT4_SKIP_MEMORY_CHECK=1`` skips the check (the estimate cannot
know about swap, or memory that other programs are about to free).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from minigpt4.common.checkpoint_files import CheckpointError
from minigpt4.models.model_config import MiniGPT4Config
from minigpt4.models.precision import CPU_DTYPES, Precision

logger = logging.getLogger(__name__)

SKIP_ENV = "MINIGPT4_SKIP_MEMORY_CHECK"
GIB = 1024**3
# Python, torch and the libraries (~0.5 GiB resident), and the activations and KV cache of an
# answer (a 7B LLM keeps 0.5 MiB per token of context in bf16).
RUNTIME_BYTES = GIB
# NF4 packs two weights per byte; one absmax per block of 64 is counted as fp32 (an upper bound:
# double quantization keeps it in 8 bits while loading, the CPU repack in bf16).
NF4_BYTES_PER_WEIGHT = 0.5 + 4 / 64
# torch's int4 layout (4-bit LLM layers on a CPU without AVX512-BF16): a bf16 scale and zero
# point per group of int4_linear.GROUP_SIZE (32) weights.
INT4_BYTES_PER_WEIGHT = 0.5 + 4 / 32
INT8_BYTES_PER_WEIGHT = 1
# The LLM tensors that bitsandbytes leaves unquantized although they are 2-D.
_UNQUANTIZED_2D = ("embed_tokens.weight", "lm_head.weight")
TRIM_INTERVAL_S = 0.5  # how often trimming() hands freed heap memory back while loading
# Rewriting a quantized LLM's layers (repacking, requantizing) frees a layout per layer, which
# glibc keeps in its heap until a trim (~3 GB for a 7B LLM): trimming after each decoder
# layer's seven weights keeps the loading peak near the steady size.
TRIM_EVERY_LAYERS = 7

# The modes a user can pick, per device: name -> (config keys to set, what it is).
MODES: dict[str, dict[str, tuple[dict[str, Any], str]]] = {
    "cpu": {
        "fp32": ({"cpu_dtype": "fp32", "llm_quantization": None, "low_resource": False}, "fp32"),
        "bf16": ({"cpu_dtype": "bf16", "llm_quantization": None, "low_resource": False}, "bf16"),
        "8bit": ({"cpu_dtype": "bf16", "llm_quantization": "8bit"}, "bf16 vision, 8-bit LLM"),
        "4bit": ({"cpu_dtype": "bf16", "llm_quantization": "4bit"}, "bf16 vision, 4-bit LLM"),
    },
    "cuda": {
        "fp16": ({"autocast_dtype": "fp16", "llm_quantization": None, "low_resource": False},
                 "fp16"),
        "bf16": ({"autocast_dtype": "bf16", "llm_quantization": None, "low_resource": False},
                 "bf16"),
        "8bit": ({"llm_quantization": "8bit"}, "8-bit LLM"),
        "4bit": ({"llm_quantization": "4bit"}, "4-bit LLM"),
    },
}  # fmt: skip


class NotEnoughMemoryError(MemoryError):
    """The chosen mode needs more memory than the machine has."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Need:
    """Bytes a run keeps in CPU memory and in GPU memory."""

    cpu: float
    gpu: float = 0.0


def mode_name(config: MiniGPT4Config, device_kind: str) -> str:
    """The :data:`MODES` name of ``config``'s mode."""
    if config.quantization:
        return config.quantization
    if device_kind == "cuda":
        return config.autocast_dtype
    return "bf16" if config.cpu_dtype == "auto" else config.cpu_dtype


# --- sizes ------------------------------------------------------------------------------------


def llm_weight_files(folder: str) -> list[str]:
    """The LLM folder's weight files, as transformers picks them (safetensors first)."""
    names = sorted(os.listdir(folder))
    for ext in (".safetensors", ".bin"):
        files = [n for n in names if n.endswith(ext) and ("model" in n or "pytorch" in n)]
        if files:
            return [os.path.join(folder, n) for n in files]
    return []


def llm_tensor_shapes(folder: str) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of every tensor in the LLM folder, from the files' headers only."""
    shapes: dict[str, tuple[int, ...]] = {}
    for path in llm_weight_files(folder):
        try:
            shapes.update(_file_shapes(path))
        except Exception as err:  # safetensors and torch raise many kinds
            raise CheckpointError(
                f"{path} (model.llama_model): this weight file cannot be read ({err}): a "
                "download cut short, a link to the wrong file, or another format"
            ) from err
    return shapes


def _file_shapes(path: str) -> dict[str, tuple[int, ...]]:
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    # a zip .bin is memory-mapped: nothing is read but its index
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return {k: tuple(v.shape) for k, v in state.items()}


def _numel(shape: Iterable[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def llm_bytes(shapes: dict[str, tuple[int, ...]], precision: Precision) -> float:
    """Bytes of the loaded LLM: quantized decoder linears, everything else in its dtype. A
    4-bit LLM on CPU is counted in the larger of its two layouts (which one it takes depends on
    the CPU: :mod:`minigpt4.models.loading.quantized`)."""
    size = torch.finfo(precision.llm).bits // 8
    four_bit = INT4_BYTES_PER_WEIGHT if precision.cpu_matmul else NF4_BYTES_PER_WEIGHT
    per_weight = {"8bit": INT8_BYTES_PER_WEIGHT, "4bit": four_bit}.get(precision.quantization)
    total = 0.0
    for name, shape in shapes.items():
        quantized = per_weight and len(shape) == 2 and not name.endswith(_UNQUANTIZED_2D)
        total += _numel(shape) * (per_weight if quantized else size)
    return total


def vision_bytes(meta_model: nn.Module, precision: Precision) -> float:
    """Bytes of everything but the LLM (ViT, Q-Former, ln_vision, llama_proj) in the run."""
    dtype_of = precision.dtype_rule(meta_model)
    total = 0.0
    for owner in meta_model.modules():
        for tensor in [*owner._parameters.values(), *owner._buffers.values()]:
            if tensor is not None:
                dtype = dtype_of(owner) if tensor.is_floating_point() else tensor.dtype
                total += tensor.numel() * dtype.itemsize
    return total


def upcast_buffer_bytes(meta_model: nn.Module, shapes: dict, precision: Precision) -> float:
    """The fp32 buffer of :mod:`minigpt4.models.upcast_linear` (the largest bf16 Linear weight in
    fp32, the output head excepted; 8-bit and 4-bit layers dequantize into it,
    :mod:`minigpt4.models.int8_linear`, :mod:`minigpt4.models.int4_linear`) when the CPU
    computes large products of bf16 weights in fp32, else 0."""
    if not (precision.cpu_matmul and precision.cpu_matmul.upcast):
        return 0.0
    llm = [
        _numel(shape)
        for name, shape in shapes.items()
        if len(shape) == 2 and not name.endswith(_UNQUANTIZED_2D)
    ]
    vision = [m.weight.numel() for m in meta_model.modules() if isinstance(m, nn.Linear)]
    return 4.0 * max(llm + vision + [0])


def need_of(meta_model: nn.Module, shapes: dict, config: MiniGPT4Config, device_kind: str) -> Need:
    """Memory of ``config``'s mode. On CUDA, an unquantized LLM is read into RAM first (the
    runner / demo moves the model), a quantized one straight onto the GPU."""
    precision = Precision.of(config, device_kind)
    vision = vision_bytes(meta_model, precision)
    llm = llm_bytes(shapes, precision)
    if device_kind != "cuda":
        return Need(cpu=vision + llm + upcast_buffer_bytes(meta_model, shapes, precision)
                    + RUNTIME_BYTES)  # fmt: skip
    in_ram = vision + (0 if precision.quantization else llm)
    return Need(cpu=in_ram + RUNTIME_BYTES, gpu=vision + llm + RUNTIME_BYTES)


def release_freed_memory() -> None:
    """Hand memory freed by the loading back to the operating system (glibc ``malloc_trim``).

    Loading and 4-bit repacking free many tensors of a few tens of MB; glibc keeps such freed
    blocks in its heap, so the process stays ~3 GB larger than what it uses for a 7B 4-bit LLM
    (measured: 6.9 GB resident after repacking, 4.4 GB after the trim). No-op without glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        trim = getattr(libc, "malloc_trim", None)
    except OSError:
        trim = None
    if trim is not None:
        trim(0)


@contextlib.contextmanager
def trimming(every_s: float = TRIM_INTERVAL_S) -> Iterator[None]:
    """Run :func:`release_freed_memory` every ``every_s`` seconds in a thread while the block runs.

    bitsandbytes quantizes a 4-bit or 8-bit LLM tensor by tensor inside ``from_pretrained``; the
    temporaries it frees sit between the quantized weights it keeps, and glibc holds them until
    a trim: the process then peaks ~2 GB above its steady size for a 7B LLM. A trim walks the
    heap in well under a second, so a periodic one costs little beside a minutes-long load.
    """
    stop = threading.Event()

    def trim_until_stopped() -> None:
        while not stop.wait(every_s):
            release_freed_memory()

    worker = threading.Thread(target=trim_until_stopped, name="malloc-trim", daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join()


# --- what the machine has ---------------------------------------------------------------------


def _cgroup_room() -> float | None:
    """Room left under a cgroup v2 memory limit (containers), or None without one."""
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else float(int(limit) - used)


def available_cpu_bytes() -> float:
    """RAM this process can still take: available RAM, or a container's limit if lower."""
    import psutil

    available = float(psutil.virtual_memory().available)
    room = _cgroup_room()
    return available if room is None else min(available, room)


def available_gpu_bytes(config: MiniGPT4Config) -> float:
    """Free memory of the GPU the model goes to (``device_8bit``, the demo's ``--gpu-id``)."""
    device = config.device_8bit  # an index, or "cpu" (then the model goes to the current GPU)
    return float(torch.cuda.mem_get_info(device if isinstance(device, int) else None)[0])


def available(config: MiniGPT4Config, device_kind: str) -> Need:
    gpu = available_gpu_bytes(config) if device_kind == "cuda" else 0.0
    return Need(cpu=available_cpu_bytes(), gpu=gpu)


# --- the check --------------------------------------------------------------------------------


def _fits(need: Need, have: Need) -> bool:
    return need.cpu <= have.cpu and need.gpu <= have.gpu


def _describe(need: Need) -> str:
    text = f"{need.cpu / GIB:.1f} GiB of RAM"
    return text + (f" and {need.gpu / GIB:.1f} GiB of GPU memory" if need.gpu else "")


def _mode_keys(config: MiniGPT4Config, keys: dict[str, Any]) -> dict[str, Any]:
    """The keys of a mode that ``config`` does not already have. ``cpu_dtype: auto`` stores
    weights in bf16 too, so it already has a mode's ``cpu_dtype: bf16``."""

    def has(key: str, value: Any) -> bool:
        if key == "cpu_dtype":
            return CPU_DTYPES[value] == CPU_DTYPES[config.cpu_dtype]
        return getattr(config, key) == value

    return {k: v for k, v in keys.items() if not has(k, v)}


def _keys_for(keys: dict[str, Any]) -> str:
    return " ".join(f"model.{k}={'null' if v is None else v}" for k, v in keys.items())


def check_fits(
    model_cls: type, config: MiniGPT4Config, device_kind: str, llm_hidden_size: int, folder: str
) -> None:
    """Raise :class:`NotEnoughMemoryError` when ``config``'s mode does not fit this machine."""
    if os.environ.get(SKIP_ENV, "").strip().lower() in ("1", "true", "yes"):
        logger.warning("%s is set: the memory check is skipped", SKIP_ENV)
        return
    with torch.device("meta"):
        meta_model = model_cls(config, llm_hidden_size)
    shapes = llm_tensor_shapes(folder)
    have = available(config, device_kind)
    need = need_of(meta_model, shapes, config, device_kind)
    chosen = mode_name(config, device_kind)
    logger.info(
        "Memory: %s on %s needs about %s; %s available",
        chosen, device_kind, _describe(need), _describe(have),
    )  # fmt: skip
    if _fits(need, have):
        return
    options = []
    for name, (keys, what) in MODES[device_kind].items():
        keys = _mode_keys(config, keys)
        mode_need = need_of(meta_model, shapes, dataclasses.replace(config, **keys), device_kind)
        if name != chosen and _fits(mode_need, have):
            options.append(f"  - {name} ({what}, about {_describe(mode_need)}): "
                           f"--options {_keys_for(keys)}")  # fmt: skip
    fix = (
        "Modes that fit:\n" + "\n".join(options)
        if options
        else "No mode fits: free memory or use a machine with more."
    )
    raise NotEnoughMemoryError(
        f"Not enough memory for this MiniGPT-4 in {chosen} on {device_kind}: it needs about "
        f"{_describe(need)}, and {_describe(have)} is available.\n{fix}\n"
        f"(Set {SKIP_ENV}=1 to load anyway.)"
    )
