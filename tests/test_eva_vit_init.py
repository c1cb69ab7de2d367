"""The EVA ViT skips timm's random init on the meta device (where loading builds it before the
weight files fill it) and keeps it everywhere else."""

from __future__ import annotations

import pytest
import torch
from timm.models import eva

from minigpt4.models.eva_vit import EvaVitConfig, create_eva_vit_g

TINY = EvaVitConfig(embed_dim=48, depth=2, num_heads=4)


def test_no_random_init_on_the_meta_device(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("timm's init ran on the meta device")

    monkeypatch.setattr(eva, "trunc_normal_", refuse)
    with torch.device("meta"):
        model = create_eva_vit_g(TINY)
    assert all(p.is_meta for p in model.parameters())
    assert model.pos_embed.shape == (1, 257, 48)
    with pytest.raises(AssertionError, match="init ran"):  # on the CPU timm's init still runs
        create_eva_vit_g(TINY)


def test_random_init_on_the_cpu_is_timms():
    torch.manual_seed(0)
    a = create_eva_vit_g(TINY)
    torch.manual_seed(1)
    b = create_eva_vit_g(TINY)
    # timm draws pos_embed from a truncated normal of std 0.02 (it is created as zeros)
    assert 0.01 < a.pos_embed.std().item() < 0.03
    assert not torch.equal(a.pos_embed, b.pos_embed)
    assert not torch.equal(a.blocks[0].attn.qkv.weight, b.blocks[0].attn.qkv.weight)
