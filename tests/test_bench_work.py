"""benchmarks/work.py: the FLOPs of a call (torch's counter, and the Linear layers it does not
see by their shapes) and the LLM weight bytes it reads, against sums worked out by hand here."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from tests.model_fixtures import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import roofline
import work

M = 5  # rows


class ElementwiseLinear(nn.Linear):
    """A Linear whose product is no matmul torch's FLOP counter knows (as a custom kernel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.unsqueeze(-2) * self.weight).sum(-1) + self.bias


def test_forward_and_backward_of_plain_layers_are_counted_by_torch():
    """A trained 8 -> 16 -> 4 stack on an input without gradient: the first layer's forward and
    weight gradient, the second's forward, weight and input gradients."""
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4))
    x = torch.randn(M, 8)
    done = work.count(lambda: model(x).sum().backward(), model)
    assert done.flops == 2 * M * (8 * 16 * 2 + 16 * 4 * 3)
    assert done.by_shape == 0 and done.counted_by() == "torch's FLOP counter"
    assert done.llm_calls == 0 and done.nbytes == 0


def test_a_layer_the_counter_does_not_see_is_counted_by_its_shape_forward_only():
    model = nn.Sequential(nn.Linear(8, 16), ElementwiseLinear(16, 4))
    x = torch.randn(M, 8)
    with torch.no_grad():
        done = work.count(lambda: model(x), model)
    assert done.flops == 2 * M * (8 * 16 + 16 * 4)
    assert done.by_shape == 1 and "+ 1 Linear layers by their shapes" in done.counted_by()


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AVX2"),
                    reason="torch's int4 layout of this CPU is not read here")  # fmt: skip
def test_a_layer_on_torchs_int4_kernel_counts_its_shape_and_packed_bytes():
    """An ``Int4WeightLinear`` (no nn.Linear; torch's counter does not see its kernel): its
    forward by its shape, and its packed weight and scales as the bytes it reads."""
    import bitsandbytes as bnb

    from minigpt4.models.int4_linear import Int4WeightLinear

    layer = bnb.nn.Linear4bit(64, 32, bias=False, compute_dtype=torch.bfloat16)
    layer.weight = bnb.nn.Params4bit(torch.randn(32, 64), requires_grad=False, quant_type="nf4")
    model = nn.Sequential(Int4WeightLinear.from_nf4(layer.to("cpu"), None))
    with torch.no_grad():
        done = work.count(lambda: model(torch.randn(M, 64).bfloat16()), model)
    assert done.flops == 2 * M * 64 * 32 and done.by_shape == 1
    embed = nn.Embedding(3, 64)
    model.get_input_embeddings = lambda: embed
    # 32 x 64 values, two per byte; a bf16 scale and zero per 32 values
    assert work.llm_bytes_per_call(model) == 32 * 64 // 2 + 2 * 2 * 32 * 64 // 32


def test_llm_calls_and_the_weight_bytes_each_reads():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
    llm = LlamaForCausalLM(config).eval()
    prompt = torch.tensor([[1, 5, 7]])
    with torch.no_grad():
        done = work.count(lambda: llm.generate(prompt, max_new_tokens=4, min_new_tokens=4,
                                               do_sample=False), llm, llm)  # fmt: skip
    assert done.llm_calls == 4  # the prompt's call gives the first token, then one per token
    # per layer: q, k, v, o (16 x 16), gate, up, down (16 x 32), two norms; the final norm and
    # lm_head (50 x 16); not the input embedding table
    per_layer = 4 * 16 * 16 + 3 * 16 * 32 + 2 * 16
    assert done.bytes_per_call == 4 * (2 * per_layer + 16 + 50 * 16)
    assert done.nbytes == 4 * done.bytes_per_call
    assert done.flops > 2 * 3 * 2 * per_layer  # at least the prompt's Linear products


def test_a_bound_is_the_larger_of_compute_and_memory():
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4))
    roof = work.measure_at(model, "cpu", ("fp32",), rows=(1, 4), repeats=2)
    assert [(t.k, t.n) for t in roof.matmuls] == [(8, 16)] * 2 + [(16, 4)] * 2
    assert roof.read_bytes == 1 << 20  # the weights' bytes, at least 1 MiB
    flops, nbytes = 1e6, 1e6
    compute, memory = flops / roof.peak("fp32"), nbytes / roof.read_bytes_per_s
    assert roof.bound_s(flops, "fp32", nbytes) == pytest.approx(max(compute, memory))
    assert roof.bound_s(flops, "fp32") == pytest.approx(compute)
    assert roof.bound_s(flops, "fp16", nbytes) is None
    assert isinstance(roof, roofline.Roofline)
