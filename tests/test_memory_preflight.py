"""The memory preflight: a real-size MiniGPT-4 on a simulated small machine.

The LLM folder is Vicuna-7B-shaped: safetensors shards whose headers are real and whose data is a
hole in a sparse file (no disk, no memory), so the estimate reads real headers and nothing heavy
can be read by mistake: if the check did not stop the load first, reading the weights would
fail on the tiny ViT/Q-Former files, not with the memory error.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from minigpt4.models import memory
from minigpt4.models.memory import GIB, NotEnoughMemoryError
from minigpt4.models.mini_gpt4 import MiniGPT4
from tests.model_fixtures import LLAMA_SIZES, LLAMA_VOCAB, TINY_DIR

SHARDS = 2


def _sparse_safetensors(path, specs: dict[str, tuple[int, ...]]) -> None:
    """A safetensors file (fp16) with a real header and a sparse, all-zero data section."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in specs.items():
        nbytes = math.prod(shape) * 2
        header[name] = {
            "dtype": "F16",
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little") + blob)
        f.truncate(8 + len(blob) + offset)


@pytest.fixture(scope="module")
def vicuna_7b(tmp_path_factory):
    """A Vicuna-7B-shaped Hugging Face folder (6.74 B parameters, fp16, sparse)."""
    folder = tmp_path_factory.mktemp("vicuna7b")
    sizes = {k: v for k, v in LLAMA_SIZES["7B"].items() if k != "params"}
    config = LlamaConfig(vocab_size=LLAMA_VOCAB, rms_norm_eps=1e-6, **sizes)
    with torch.device("meta"):
        specs = {k: tuple(v.shape) for k, v in LlamaForCausalLM(config).state_dict().items()}
    names = list(specs)
    for i in range(SHARDS):
        part = {k: specs[k] for k in names[i::SHARDS]}
        _sparse_safetensors(folder / f"model-{i + 1:05d}-of-{SHARDS:05d}.safetensors", part)
    config.to_json_file(folder / "config.json")
    shutil.copy(TINY_DIR / "llama" / "tokenizer.model", folder / "tokenizer.model")
    assert sum(math.prod(s) for s in specs.values()) == LLAMA_SIZES["7B"]["params"]
    return folder


def _real_size_config(vicuna_7b, **values):
    """The eval config's model section over real sizes (the tiny files only fill the preflight
    of files; they would not fit the real-size ViT / Q-Former)."""
    return {
        "arch": "mini_gpt4",
        "llama_model": str(vicuna_7b),
        "vit_model_path": str(TINY_DIR / "eva_vit_g.pth"),
        "q_former_model": str(TINY_DIR / "blip2_pretrained_flant5xxl.pth"),
        "device": "cpu",
        **values,
    }


def _small_machine(monkeypatch, gib: float) -> None:
    monkeypatch.setattr(memory, "available_cpu_bytes", lambda: gib * GIB)
    monkeypatch.delenv(memory.SKIP_ENV, raising=False)


def test_a_7b_model_on_a_12_gib_machine_is_refused_with_the_modes_that_fit(vicuna_7b, monkeypatch):
    _small_machine(monkeypatch, 12)
    with pytest.raises(NotEnoughMemoryError) as info:
        MiniGPT4.from_config(_real_size_config(vicuna_7b))
    message = str(info.value)
    first, *rest = message.splitlines()
    assert first.startswith("Not enough memory for this MiniGPT-4 in bf16 on cpu: it needs about")
    assert "12.0 GiB of RAM is available" in first
    needed = float(first.split("needs about ")[1].split(" GiB")[0])
    # 6.74 B LLM + 1.09 B vision parameters in bf16, plus the runtime allowance
    assert 15.0 < needed < 16.0
    assert rest[0] == "Modes that fit:"
    fits = [line for line in rest if line.startswith("  - ")]
    assert [line.split()[1] for line in fits] == ["8bit", "4bit"]
    assert fits[0].endswith("--options model.llm_quantization=8bit")
    assert fits[1].endswith("--options model.llm_quantization=4bit")
    assert "MINIGPT4_SKIP_MEMORY_CHECK=1" in rest[-1]


def test_quantized_modes_are_offered_from_fp32_with_all_their_keys(vicuna_7b, monkeypatch):
    _small_machine(monkeypatch, 8)
    with pytest.raises(NotEnoughMemoryError) as info:
        MiniGPT4.from_config(_real_size_config(vicuna_7b, cpu_dtype="fp32"))
    (fit,) = [line for line in str(info.value).splitlines() if line.startswith("  - ")]
    assert fit.startswith("  - 4bit (bf16 vision, 4-bit LLM, about ")
    assert fit.endswith("--options model.cpu_dtype=bf16 model.llm_quantization=4bit")


def test_nothing_fits_a_tiny_machine(vicuna_7b, monkeypatch):
    _small_machine(monkeypatch, 2)
    with pytest.raises(NotEnoughMemoryError, match="No mode fits: free memory or use a machine"):
        MiniGPT4.from_config(_real_size_config(vicuna_7b, low_resource=True))


def test_a_mode_that_fits_is_logged_and_loading_goes_on(vicuna_7b, monkeypatch, caplog):
    """On a 64 GiB machine the check passes and loading starts (and fails on the tiny ViT file,
    which does not fit the real-size ViT)."""
    _small_machine(monkeypatch, 64)
    with caplog.at_level(logging.INFO, logger="minigpt4.models.memory"):
        with pytest.raises(Exception, match="does not fit the EVA ViT"):
            MiniGPT4.from_config(_real_size_config(vicuna_7b))
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Memory:")]
    assert line.startswith("Memory: bf16 on cpu needs about 15.")
    assert line.endswith("64.0 GiB of RAM available")


def test_the_check_can_be_skipped(vicuna_7b, monkeypatch):
    _small_machine(monkeypatch, 1)
    monkeypatch.setenv(memory.SKIP_ENV, "1")
    with pytest.raises(Exception, match="does not fit the EVA ViT"):
        MiniGPT4.from_config(_real_size_config(vicuna_7b))


@pytest.mark.parametrize(
    "mode, low, high",
    [("bf16", 15.0, 16.0), ("fp32", 29.5, 30.5), ("8bit", 9.1, 10.1), ("4bit", 6.4, 7.4)],
)
def test_estimates_of_each_cpu_mode(vicuna_7b, mode, low, high):
    """7B: LLM 6.74 B and vision 1.09 B parameters; 8-bit keeps the embeddings and lm_head
    (2 x 131 M) in 16 bits, 4-bit too, the other 6.48 B at 1 or 0.5625 bytes each; plus the
    vision side in bf16 (2.2 GB) and 1 GiB for the runtime."""
    from minigpt4.models.model_config import MiniGPT4Config

    keys, _ = memory.MODES["cpu"][mode]
    config = MiniGPT4Config.from_cfg(_real_size_config(vicuna_7b, **keys))
    with torch.device("meta"):
        meta = MiniGPT4(config, 4096)
    shapes = memory.llm_tensor_shapes(str(vicuna_7b))
    need = memory.need_of(meta, shapes, config, "cpu")
    assert low < need.cpu / GIB < high and need.gpu == 0


def test_trimming_hands_memory_back_while_the_block_runs_and_stops_after(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "release_freed_memory", lambda: calls.append(time.monotonic()))
    with memory.trimming(every_s=0.01):
        time.sleep(0.2)
    during = len(calls)
    time.sleep(0.05)
    assert during >= 5, during  # ~20 expected; a loaded machine may schedule the thread late
    assert len(calls) == during  # the thread has stopped
