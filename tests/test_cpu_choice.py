"""The CPU's choice of dtype for matrix products (``model.cpu_dtype: auto``): the decision for
each CPU kind (capability queries patched, so both branches run on any machine), the keys that
override it, its log line, and that the fp32 products of bf16 weights give the tiny model the
numbers of bf16 products within rounding (forward and backward)."""

from __future__ import annotations

import logging
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minigpt4.common.config_error import ConfigError
from minigpt4.models import cpu_choice
from minigpt4.models import upcast_linear as upcast
from minigpt4.models.mini_gpt4 import MiniGPT4
from minigpt4.models.model_config import MiniGPT4Config
from minigpt4.models.precision import Precision
from tests.model_fixtures import load_reference, tiny_model_config

BF16 = torch.bfloat16
FP32_COPY = upcast.fp32_copy


@pytest.fixture(scope="module")
def ref():
    return load_reference()


def _cpu(monkeypatch, avx512_bf16: bool, amx: bool, onednn_limit: str | None = None) -> None:
    """Pretend to be a CPU with (or without) native bf16 products."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    if onednn_limit is None:
        monkeypatch.delenv(cpu_choice.ONEDNN_ISA_ENV, raising=False)
    else:
        monkeypatch.setenv(cpu_choice.ONEDNN_ISA_ENV, onednn_limit)


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "limit", "upcast", "why"),
    [
        (False, False, None, True, "neither AVX512_BF16 nor AMX"),
        (True, False, None, False, "has AVX512_BF16"),
        (False, True, None, False, "has AMX"),
        (True, True, "avx2", True, "ONEDNN_MAX_CPU_ISA=AVX2 rules out"),
        (True, False, "AVX512_CORE", True, "ONEDNN_MAX_CPU_ISA=AVX512_CORE rules out"),
        (True, False, "AVX512_CORE_BF16", False, "has AVX512_BF16"),
        (True, True, "ALL", False, "has AMX"),
    ],
)
def test_auto_upcasts_exactly_where_bf16_products_are_emulated(
    monkeypatch, avx512_bf16, amx, limit, upcast, why
):
    _cpu(monkeypatch, avx512_bf16, amx, limit)
    choice = cpu_choice.choose("auto", "auto")
    assert choice.upcast is upcast
    assert why in choice.reason


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize(
    ("cpu_dtype", "cpu_matmul", "upcast"),
    [
        ("bf16", "auto", False),  # today's bf16, on every CPU
        ("fp32", "auto", False),
        ("fp32", "fp32", False),
        ("auto", "bf16", False),
        ("auto", "fp32", True),
        ("bf16", "fp32", True),
    ],
)
def test_keys_override_the_machine(monkeypatch, native, cpu_dtype, cpu_matmul, upcast):
    _cpu(monkeypatch, native, False)
    config = MiniGPT4Config.from_cfg(
        {"llama_model": "x", "cpu_dtype": cpu_dtype, "cpu_matmul": cpu_matmul}
    )
    assert Precision.of(config, "cpu").cpu_matmul.upcast is upcast
    assert Precision.of(config, "cuda").cpu_matmul is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"cpu_dtype": "fp16"}, "model.cpu_dtype must be one of auto, bf16, fp32; got 'fp16'"),
        ({"cpu_matmul": "int8"}, "model.cpu_matmul must be one of auto, bf16, fp32; got 'int8'"),
        (
            {"cpu_quantized": "fast"},
            "model.cpu_quantized must be one of auto, bitsandbytes, torch; got 'fast'",
        ),
        (
            {"cpu_dtype": "fp32", "cpu_matmul": "bf16"},
            "model.cpu_dtype=fp32 and model.cpu_matmul=bf16 contradict each other",
        ),
    ],
)
def test_bad_values_are_config_errors_naming_key_and_choices(values, message):
    with pytest.raises(ConfigError, match=message):
        MiniGPT4Config.from_cfg({"llama_model": "x", **values})


def test_the_default_is_auto_with_bf16_weights():
    config = MiniGPT4Config.from_cfg({"llama_model": "x"})
    assert (config.cpu_dtype, config.cpu_matmul) == ("auto", "auto")
    assert Precision.of(config, "cpu").llm == BF16


@pytest.mark.parametrize(
    ("native", "expected"),
    [
        (
            True,
            "CPU matmuls: in the weights' dtype (one-row products in torch's own kernel: faster "
            "than oneDNN's here): this CPU has AVX512_BF16",
        ),
        (False, "CPU matmuls: fp32 for products of 16 rows or more"),
    ],
)
def test_the_choice_is_logged_next_to_the_dtypes(monkeypatch, caplog, native, expected):
    _cpu(monkeypatch, native, False)
    with caplog.at_level(logging.INFO, logger="minigpt4.models.loading"):
        model = MiniGPT4.from_config(tiny_model_config(stage=1, cpu_dtype="auto", with_ckpt=False))
    lines = [r.getMessage() for r in caplog.records]
    at = next(i for i, line in enumerate(lines) if line.startswith("Running on cpu"))
    assert lines[at + 1].startswith(expected)
    assert lines[at + 1].endswith("(model.cpu_matmul: bf16 or fp32 overrides it)")
    upcasting = [m for m in model.modules() if isinstance(m, upcast.UpcastLinear)]
    assert bool(upcasting) is not native
    assert model.llama_model.get_output_embeddings() not in upcasting


def test_fp32_weights_log_fp32_products_without_an_override():
    config = MiniGPT4Config.from_cfg({"llama_model": "x", "cpu_dtype": "fp32"})
    line = Precision.of(config, "cpu").cpu_matmul.describe()
    assert line == "CPU matmuls: fp32 (model.cpu_dtype is fp32)"


def _count_upcasts(monkeypatch) -> list[tuple[int, ...]]:
    """Record the shape of every weight converted to fp32 from now on."""
    seen: list[tuple[int, ...]] = []

    def spy(weight):
        seen.append(tuple(weight.shape))
        return FP32_COPY(weight)

    monkeypatch.setattr(upcast, "fp32_copy", spy)
    return seen


def _encode_and_loss(model, ref) -> tuple[torch.Tensor, float]:
    images = ref["images_eval_processed"]
    samples = {"image": images, "text_input": list(ref["stage2"]["text"])}
    random.seed(0)  # the stage-2 instruction each sample gets
    with torch.no_grad():
        inputs_llama, _ = model.encode_img(images)
        return inputs_llama, model(samples)["loss"].item()


def test_upcast_products_give_the_numbers_of_bf16_products(monkeypatch, ref):
    """A bf16 product accumulates in fp32 too, so converting the weight first changes the
    numbers only by the order of the sums and one rounding (the ViT's q/v bias is added after
    its product): bf16's numbers within rounding, within bf16's tolerance of the original's."""
    results = {}
    for matmul in ("bf16", "fp32"):
        config = tiny_model_config(stage=2, cpu_dtype="auto", cpu_matmul=matmul)
        model = MiniGPT4.from_config(config).eval()
        for name in ("visual_encoder", "Qformer", "llama_model"):
            assert {p.dtype for p in getattr(model, name).parameters()} == {BF16}, name
        seen = _count_upcasts(monkeypatch)
        results[matmul] = _encode_and_loss(model, ref)
        assert bool(seen) is (matmul == "fp32")
    (bf16_inputs, bf16_loss), (inputs_llama, loss) = results["bf16"], results["fp32"]
    assert inputs_llama.dtype == BF16
    gap = (inputs_llama.float() - bf16_inputs.float()).norm() / bf16_inputs.float().norm()
    assert gap < 5e-3 and abs(loss - bf16_loss) < 5e-3
    close = torch.allclose(inputs_llama.float(), ref["inputs_llama"], rtol=0.05, atol=0.05)
    assert close and abs(loss - ref["stage2"]["loss"].item()) < 0.05


def test_prefill_upcasts_decode_does_not_and_the_next_token_logits_agree(monkeypatch, ref):
    """The prompt's products (many rows) convert each decoder weight once, a decode step (one
    row) none; the next-token logits of both ways agree within bf16's rounding."""
    logits, converted = {}, {}
    for matmul in ("bf16", "fp32"):
        config = tiny_model_config(stage=2, cpu_dtype="auto", cpu_matmul=matmul)
        model = MiniGPT4.from_config(config).eval()
        with torch.no_grad():
            inputs_llama, _ = model.encode_img(ref["images_eval_processed"][:1])
            context = model.get_context_emb("<s>Hi <ImageHere> what do you see", [inputs_llama])
            assert context.shape[1] >= cpu_choice.UPCAST_MIN_ROWS
            seen = _count_upcasts(monkeypatch)
            logits[matmul] = model.llama_model(inputs_embeds=context).logits[0, -1].float()
            _greedy(model, context, 3)  # prefill + 2 decode steps
            converted[matmul] = len(seen)
    per_pass = len(model.llama_model.model.layers) * 7  # q, k, v, o, gate, up, down
    assert (converted["bf16"], converted["fp32"]) == (0, 2 * per_pass)
    gap = (logits["fp32"] - logits["bf16"]).abs().max() / logits["bf16"].abs().max()
    assert gap < 0.02


def _greedy(model, context, tokens: int) -> list[int]:
    from minigpt4.models.generation import GenerationSettings, StopRule

    settings = GenerationSettings(max_new_tokens=tokens, do_sample=False, min_length=tokens)
    (out,) = model.generate_from_embeddings([context], [settings], [StopRule((), (), frozenset())])
    return list(out.tokens)


def test_backward_through_two_upcast_layers_matches_fp32():
    """The shared fp32 buffer is refilled by each layer; the backward pass converts again, so
    the gradients are those of fp32 products of the same bf16 weights."""
    torch.manual_seed(0)
    layers = [nn.Linear(24, 40).to(BF16), nn.Linear(40, 24).to(BF16)]
    chain = nn.Sequential(*layers).requires_grad_(False)
    x = torch.randn(2, 16, 24, dtype=BF16, requires_grad=True)
    expected_x = x.detach().float().requires_grad_(True)
    h = F.linear(expected_x, layers[0].weight.float(), layers[0].bias.float())
    expected_out = F.linear(h.bfloat16().float(), layers[1].weight.float(), layers[1].bias.float())
    expected_out.sum().backward()
    assert upcast.upcast_frozen_linears(chain, min_rows=16) == 2
    out = chain(x)
    assert out.dtype == BF16
    assert torch.allclose(out.float(), expected_out, rtol=0.01, atol=0.01)
    out.float().sum().backward()
    assert torch.allclose(x.grad.float(), expected_x.grad, rtol=0.02, atol=0.02)
    assert not torch.equal(x.grad, torch.zeros_like(x.grad))


def test_small_products_and_trained_weights_are_not_converted(monkeypatch):
    layer = nn.Linear(8, 8).to(BF16).requires_grad_(False)
    upcast.upcast_frozen_linears(layer, min_rows=16)
    converted = _count_upcasts(monkeypatch)
    layer(torch.randn(1, 15, 8, dtype=BF16))
    assert converted == []
    layer(torch.randn(2, 8, 8, dtype=BF16))  # 16 rows across the batch
    assert converted == [(8, 8)]
    layer.weight.requires_grad_(True)
    layer(torch.randn(32, 8, dtype=BF16))
    assert converted == [(8, 8)]


@pytest.mark.parametrize(
    ("values", "native", "expected"),
    [
        ({}, False, 4 * 11008 * 4096),  # the largest decoder weight, not the head or embeddings
        ({}, True, 0),
        ({"llm_quantization": "4bit"}, False, 4 * 11008 * 4096),  # 4-bit layers dequantize too
        ({"low_resource": True}, False, 4 * 11008 * 4096),  # 8-bit weights dequantize into it
        ({"cpu_dtype": "bf16"}, False, 0),
    ],
)
def test_the_memory_check_counts_the_fp32_buffer(monkeypatch, values, native, expected):
    from minigpt4.models.memory import upcast_buffer_bytes

    _cpu(monkeypatch, native, False)
    shapes = {
        "model.embed_tokens.weight": (32000, 4096),
        "model.layers.0.mlp.up_proj.weight": (11008, 4096),
        "model.layers.0.self_attn.q_proj.weight": (4096, 4096),
        "model.layers.0.input_layernorm.weight": (4096,),
        "lm_head.weight": (32000, 4096),
    }
    vision = nn.Sequential(nn.Linear(32, 64), nn.Linear(64, 8))
    precision = Precision.of(MiniGPT4Config.from_cfg({"llama_model": "x", **values}), "cpu")
    assert upcast_buffer_bytes(vision, shapes, precision) == expected
