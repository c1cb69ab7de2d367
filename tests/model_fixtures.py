"""Ready-made tiny MiniGPT-4 configs over the original's tiny reference weights.

Other test modules import these (``from tests.model_fixtures import tiny_model_config``): the
config loads ``tests/fixtures/reference/tiny/`` through the normal ``MiniGPT4.from_config`` path,
in the same YAML keys a real config uses, plus ``vit_config``/``qformer_config`` for the sizes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_DIR = REPO_ROOT / "tests" / "fixtures" / "reference" / "tiny"
REFERENCE_FILE = REPO_ROOT / "tests" / "fixtures" / "reference" / "tiny_reference.pt"
ALIGNMENT_PROMPTS = REPO_ROOT / "prompts" / "alignment.txt"

# Sizes of the tiny reference set (tiny_reference.pt["tiny_hparams"], README.md beside it).
TINY_VIT_CONFIG = {"embed_dim": 48, "depth": 2, "num_heads": 4}
TINY_QFORMER_CONFIG = {
    "hidden_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 64,
}
TINY_NUM_QUERY_TOKEN = 8
STAGE2_TEMPLATE = "###Human: {} ###Assistant: "

# LLaMA-7B / 13B (Vicuna v0/v1.1) shapes and their well-known parameter counts.
LLAMA_SIZES = {
    "7B": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, params=6_738_415_616),
    "13B": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                num_attention_heads=40, params=13_015_864_320),
}  # fmt: skip
LLAMA_VOCAB = 32000


def tiny_model_config(stage: int = 1, with_ckpt: bool = True, **overrides: Any) -> DictConfig:
    """``model`` section for the tiny reference weights (fp32, CPU, eager attention).

    ``stage=1``: no prompt, end_sym "\\n", max_txt_len 32 (train_configs stage 1 defaults);
    ``stage=2``: the alignment prompts, template ``###Human: {} ###Assistant: ``, end_sym "###",
    max_txt_len 160 (stage 2 / eval configs). ``with_ckpt`` loads the tiny ``llama_proj`` of
    ``pretrained_minigpt4_tiny.pth``. Keyword arguments override any key.
    """
    cfg: dict[str, Any] = {
        "arch": "mini_gpt4",
        "model_type": "pretrain_vicuna",
        "image_size": 224,
        "drop_path_rate": 0,
        "use_grad_checkpoint": False,
        "vit_precision": "fp16",
        "freeze_vit": True,
        "freeze_qformer": True,
        "num_query_token": TINY_NUM_QUERY_TOKEN,
        "vit_model_path": str(TINY_DIR / "eva_vit_g.pth"),
        "q_former_model": str(TINY_DIR / "blip2_pretrained_flant5xxl.pth"),
        "llama_model": str(TINY_DIR / "llama"),
        "vit_config": dict(TINY_VIT_CONFIG),
        "qformer_config": dict(TINY_QFORMER_CONFIG),
        "attn_implementation": "eager",
        "device": "cpu",
    }
    if stage == 2:
        cfg.update(
            {
                "max_txt_len": 160,
                "end_sym": "###",
                "prompt_path": str(ALIGNMENT_PROMPTS),
                "prompt_template": STAGE2_TEMPLATE,
            }
        )
    elif stage != 1:
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    if with_ckpt:
        cfg["ckpt"] = str(TINY_DIR / "pretrained_minigpt4_tiny.pth")
    cfg.update(overrides)
    return OmegaConf.create(cfg)


def load_reference() -> dict[str, Any]:
    """The original's outputs on the tiny weights (trusted file shipped with the repo)."""
    import torch

    return torch.load(REFERENCE_FILE, map_location="cpu", weights_only=False)


def build_full_size(llm_size: str = "7B", device: str = "cuda"):
    """A real-size MiniGPT4 (EVA ViT-g, bert-base Q-Former, 7B/13B LLaMA) on the meta device.

    Random (meta) weights, nothing allocated; ``device`` only picks dtypes as from_config would
    (``"cuda"``: fp16 ViT Linear/Conv). The tokenizer is the tiny one (layout tests only).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from minigpt4.models.mini_gpt4 import MiniGPT4

    sizes = {k: v for k, v in LLAMA_SIZES[llm_size].items() if k != "params"}
    with torch.device("meta"):
        llm = LlamaForCausalLM(LlamaConfig(vocab_size=LLAMA_VOCAB, rms_norm_eps=1e-6, **sizes))
        return MiniGPT4(
            q_former_model=None,
            vit_model_path=None,
            llama_model=llm,
            llama_tokenizer=str(TINY_DIR / "llama"),
            device=device,
        )


def read_key_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` from one of the original's key lists in tests/fixtures/keys/."""
    out = {}
    for line in (REPO_ROOT / "tests" / "fixtures" / "keys" / name).read_text().splitlines():
        key, shape, _dtype = line.split("\t")
        out[key] = tuple(int(x) for x in shape.strip("[]").split(",") if x.strip())
    return out
