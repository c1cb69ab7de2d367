"""The streaming LLM folder writer (benchmarks' real-size weights) and the checkpoint content."""

from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from minigpt4.models.weights import LLM_INDEX_FILE, training_checkpoint_state, write_llm_folder
from tests.model_fixtures import TINY_DIR


def test_llm_folder_is_written_shard_by_shard_and_loads(tmp_path):
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, tie_word_embeddings=False)  # fmt: skip
    with torch.device("meta"):
        specs = {
            k: (tuple(v.shape), torch.float16)
            for k, v in LlamaForCausalLM(config).state_dict().items()
        }
    made: list[str] = []

    def make(name, shape, dtype):
        made.append(name)
        gen = torch.Generator().manual_seed(len(made))
        return torch.randn(shape, generator=gen).to(dtype)

    folder = tmp_path / "llm"
    tokenizer = str(TINY_DIR / "llama" / "tokenizer.model")
    shards = write_llm_folder(str(folder), config.to_dict(), specs, make, tokenizer, 8192)
    assert made == list(specs)  # every tensor made once, in order
    assert len(shards) > 2 and all(p.endswith(f"-of-{len(shards):05d}.safetensors") for p in shards)
    index = json.loads((folder / LLM_INDEX_FILE).read_text())
    assert sorted(index["weight_map"]) == sorted(specs)
    assert index["metadata"]["total_size"] == sum(
        2 * torch.Size(s).numel() for s, _ in specs.values()
    )
    assert (folder / "tokenizer.model").is_file()
    assert not list(folder.glob("*.tmp"))
    llm = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float16)
    for name, value in llm.state_dict().items():  # each tensor as made (seeded by its position)
        gen = torch.Generator().manual_seed(list(specs).index(name) + 1)
        assert torch.equal(value, torch.randn(specs[name][0], generator=gen).half()), name


def test_training_checkpoint_state_keeps_trainable_params_and_persistent_buffers():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.frozen = torch.nn.Linear(2, 2).requires_grad_(False)
            self.llama_proj = torch.nn.Linear(2, 3)
            self.register_buffer("position_ids", torch.arange(4))
            self.register_buffer("scratch", torch.zeros(2), persistent=False)

    state = training_checkpoint_state(Model())
    assert list(state) == ["position_ids", "llama_proj.weight", "llama_proj.bias"]
