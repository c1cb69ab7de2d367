"""8-bit and 4-bit LLMs on CPU (bitsandbytes): quiet answers, the 4-bit kernel layout handled at
load time and undone for training, and training checkpoints as small as unquantized ones."""

from __future__ import annotations

import logging
import subprocess
import sys
import types
import warnings

import pytest
import torch
from omegaconf import OmegaConf

from minigpt4.models.mini_gpt4 import MiniGPT4
from minigpt4.models.weights import training_checkpoint_state
from tests.model_fixtures import REPO_ROOT, load_reference, read_key_shapes, tiny_model_config
from tests.test_runner import ToyConfig, run_cfg

QUANTIZED = {"8bit": {"low_resource": True}, "4bit": {"llm_quantization": "4bit"}}


@pytest.fixture(scope="module")
def ref():
    return load_reference()


def _chat(tmp_path, **overrides):
    """A Chat built as demo.py builds it (Config + registry + build_chat) on CPU."""
    import minigpt4  # noqa: F401
    from minigpt4.common.config import Config
    from minigpt4.conversation.loading import build_chat

    model_cfg = tiny_model_config(stage=2, **overrides)
    del model_cfg["device"]
    path = tmp_path / "eval.yaml"
    OmegaConf.save(
        {
            "model": model_cfg,
            "datasets": {
                "cc_sbu_align": {
                    "vis_processor": {"train": {"name": "blip2_image_eval", "image_size": 224}}
                }
            },
            "run": {"task": "image_text_pretrain"},
        },
        path,
    )
    return build_chat(Config(types.SimpleNamespace(cfg_path=str(path), options=None)), "cpu")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _answer_records(chat, ref, tokens: int) -> tuple[list[str], list[str], int]:
    """Log records (any logger, any level) and Python warnings of one greedy answer."""
    conv, img_list = chat.new_conversation(), []
    chat.upload_img(ref["images_eval_processed"][1], conv, img_list)
    chat.ask("What is in the picture?", conv)
    handler, root = _Records(), logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, ids = chat.answer(conv, img_list, max_new_tokens=tokens, min_length=tokens,
                                 do_sample=False)  # fmt: skip
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    logs = [f"{r.name}: {r.getMessage()}" for r in handler.records]
    return logs, [str(w.message) for w in caught], len(ids)


@pytest.mark.parametrize("mode", sorted(QUANTIZED))
def test_quantized_answers_log_nothing_per_token(mode, tmp_path, ref):
    """bitsandbytes is fed the dtype it computes in: no per-call cast warning (the 7B 8-bit
    answer used to log one per layer and token), and nothing else grows with the answer."""
    chat = _chat(tmp_path, **QUANTIZED[mode])
    short = _answer_records(chat, ref, 3)
    long = _answer_records(chat, ref, 15)
    assert (short[2], long[2]) == (3, 15)
    assert long[0] == short[0] and long[1] == short[1]
    assert not [m for m in long[0] if m.startswith("bitsandbytes")]
    assert long[1] == []


def _load_4bit_logs(tmp_path, caplog) -> tuple[object, list[str]]:
    with caplog.at_level(logging.INFO, logger="minigpt4.models.loading.quantized"):
        chat = _chat(tmp_path, **QUANTIZED["4bit"])
    return chat, [r.getMessage() for r in caplog.records]


def _packed_layers(chat) -> list[bool]:
    """For each 4-bit layer: is it in the packed CPU kernel's layout?"""
    import bitsandbytes as bnb

    layers = [m for m in chat.model.llama_model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    return [bool(getattr(m.weight.quant_state, "packing_format_for_cpu", False)) for m in layers]


def test_packed_4bit_kernel_is_repacked_at_load_time_and_announced(tmp_path, ref, caplog):
    """Where bitsandbytes' packed CPU kernel applies, the layers it can take are repacked while
    loading (logged with its time), not silently on the first answer."""
    from bitsandbytes.functional import has_avx512bf16

    if not has_avx512bf16():
        pytest.skip(reason="bitsandbytes' packed 4-bit CPU kernel needs AVX512-BF16")
    chat, messages = _load_4bit_logs(tmp_path, caplog)
    assert any(m.startswith("4-bit LLM on CPU: bitsandbytes' packed AVX512-BF16") for m in messages)
    assert any(m.startswith("4-bit LLM: repacking") for m in messages)
    assert any(m.startswith("4-bit LLM: repacked in") for m in messages)
    assert any(_packed_layers(chat))
    logs, _, _ = _answer_records(chat, ref, 4)
    assert not [m for m in logs if "repack" in m]  # nothing left for the first answer


def test_without_avx512_bf16_4bit_takes_torch_int4_and_says_so(tmp_path, ref, caplog, monkeypatch):
    """A CPU without AVX512-BF16 (an AVX2-only EPYC): one line names torch's int4 kernel and
    why, nothing is repacked, and the answer works and logs nothing. Simulated on any CPU
    through bitsandbytes' own check, which its layers consult when they are built."""
    import bitsandbytes.nn.modules

    from minigpt4.models.int4_linear import Int4WeightLinear

    monkeypatch.setattr(bitsandbytes.nn.modules, "has_avx512bf16", lambda: False)
    chat, messages = _load_4bit_logs(tmp_path, caplog)
    chosen = [m for m in messages if m.startswith("4-bit LLM on CPU: torch's int4 kernel")]
    assert len(chosen) == 1 and "this CPU has no AVX512-BF16" in chosen[0]
    assert not [m for m in messages if m.startswith("4-bit LLM: repack")]
    logs, caught, tokens = _answer_records(chat, ref, 4)
    assert tokens == 4 and not [m for m in logs if "repack" in m or m.startswith("bitsandbytes")]
    assert caught == [] and not any(_packed_layers(chat))
    layers = [m for m in chat.model.modules() if isinstance(m, Int4WeightLinear)]
    assert len(layers) == (8 if " for 8 of 14 layers " in chosen[0] else 0)


def test_the_kernels_install_hint_is_not_shown():
    """bitsandbytes asks on import to `pip install kernels` (a hub kernel this project does not
    use, offline); only that message is dropped."""
    code = (
        "import logging; logging.basicConfig(level=logging.INFO)\n"
        "from minigpt4.models.loading import quantized\n"
        "{quiet}"
        "import bitsandbytes\n"
    )

    def run(quiet: str) -> str:
        command = [sys.executable, "-c", code.format(quiet=quiet)]
        return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True).stderr  # fmt: skip

    quiet = run("quantized.quiet_bitsandbytes()\n")
    assert "pip install kernels" not in quiet
    from bitsandbytes.functional import has_avx512bf16

    if has_avx512bf16():  # the hint exists only where bitsandbytes' fused CPU kernel applies
        assert "pip install kernels" in run("")


def _grad(model, ref) -> torch.Tensor:
    samples = {"image": ref["images_eval_processed"], "text_input": list(ref["stage2"]["text"])}
    model.train()
    model.zero_grad(set_to_none=True)
    model(samples)["loss"].backward()
    model.eval()
    return model.llama_proj.weight.grad.clone()


def test_four_bit_training_after_answering_has_the_right_gradients(tmp_path, ref, monkeypatch):
    """The packed 4-bit CPU layout has no backward pass: training after an answer restores
    bitsandbytes' layout first, and the gradient matches a model that never answered (up to
    the packed layout's bf16 rounding of the block scales)."""
    fresh = MiniGPT4.from_config(tiny_model_config(stage=2, **QUANTIZED["4bit"]))
    monkeypatch.setattr(fresh, "prompt_list", fresh.prompt_list[:1])  # the same prompt in both
    expected = _grad(fresh, ref)
    chat = _chat(tmp_path, **QUANTIZED["4bit"])
    monkeypatch.setattr(chat.model, "prompt_list", chat.model.prompt_list[:1])
    _answer_records(chat, ref, 3)
    got = _grad(chat.model, ref)
    assert got.abs().sum() > 0
    torch.testing.assert_close(got, expected, rtol=0.05, atol=1e-3)


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, ref) -> None:
        self.images = ref["images_eval_processed"]
        self.texts = list(ref["stage2"]["text"])

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "text_input": self.texts[i]}


def _train_one_epoch(model, ref, out) -> dict:
    """One epoch of two steps through runner_base; returns the checkpoint."""
    from minigpt4.runners.runner_base import RunnerBase
    from minigpt4.tasks.image_text_pretrain import ImageTextPretrainTask

    data = _Pairs(ref)
    data.name = "pairs"
    cfg = ToyConfig(run_cfg(out, max_epoch=1, iters_per_epoch=2, batch_size_train=1))
    RunnerBase(cfg, ImageTextPretrainTask(), model, {"pairs": {"train": data}}, "job").train()
    path = out / "job" / "checkpoint_0.pth"
    return {"path": path, "content": torch.load(path, weights_only=True)}


@pytest.mark.parametrize("mode", sorted(QUANTIZED))
def test_checkpoints_of_quantized_runs_hold_only_trainable_weights(mode, tmp_path, ref):
    plain = _train_one_epoch(MiniGPT4.from_config(tiny_model_config(stage=2)), ref,
                             tmp_path / "plain")  # fmt: skip
    model = MiniGPT4.from_config(tiny_model_config(stage=2, **QUANTIZED[mode]))
    before = model.llama_proj.weight.detach().clone()
    quantized = _train_one_epoch(model, ref, tmp_path / mode)
    weights = quantized["content"]["model"]
    assert (
        set(weights) == set(plain["content"]["model"]) == {"llama_proj.weight", "llama_proj.bias"}
    )
    assert set(training_checkpoint_state(model)) == set(weights)
    # the same bytes as an unquantized run's (the optimizer state is llama_proj's too)
    assert quantized["path"].stat().st_size == pytest.approx(plain["path"].stat().st_size, abs=64)
    # the original loads ckpt["model"] into its model by name: every key is one of its tensors
    original_keys = read_key_shapes("tiny_minigpt4_keys.txt")
    assert all(
        k in original_keys and original_keys[k] == tuple(v.shape) for k, v in weights.items()
    )
    # and here, as model.ckpt of an unquantized model
    reloaded = MiniGPT4.from_config(tiny_model_config(stage=2, ckpt=str(quantized["path"])))
    torch.testing.assert_close(reloaded.llama_proj.weight, weights["llama_proj.weight"])
    assert not torch.equal(weights["llama_proj.weight"], before)  # it did train
