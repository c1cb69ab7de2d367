"""The image-to-token adapter is configuration: ``model.image_adapter`` (or the original's
``has_qformer``) picks the module, ``model.group_size`` its grouping."""

from __future__ import annotations

import pytest
import torch

from minigpt4.models.mini_gpt4 import MiniGPT4
from minigpt4.models.model_config import MiniGPT4Config
from minigpt4.models.projection import GroupAdapter, QFormerAdapter, grouped_patches
from minigpt4.models.train_memory import sample_tokens
from minigpt4.models.trainable import trainable_names
from tests.model_fixtures import TINY_QFORMER_CONFIG, TINY_VIT_CONFIG


def config(**values) -> MiniGPT4Config:
    base = {"llama_model": "(unused)", "vit_config": dict(TINY_VIT_CONFIG)}
    base["qformer_config"] = dict(TINY_QFORMER_CONFIG)
    return MiniGPT4Config.from_cfg({**base, **values})


@pytest.mark.parametrize(
    ("values", "adapter", "has_qformer"),
    [
        ({}, QFormerAdapter, True),
        ({"has_qformer": True}, QFormerAdapter, True),
        ({"has_qformer": False}, GroupAdapter, False),
        ({"image_adapter": "group"}, GroupAdapter, False),
        ({"image_adapter": "qformer", "has_qformer": True}, QFormerAdapter, True),
    ],
)
def test_the_key_or_the_originals_has_qformer_picks_the_adapter(values, adapter, has_qformer):
    cfg = config(**values)
    assert type(cfg.adapter) is adapter and cfg.has_qformer is has_qformer


def test_contradicting_or_unknown_adapters_are_clear_errors():
    with pytest.raises(ValueError, match="has_qformer False and model.image_adapter 'qformer'"):
        config(image_adapter="qformer", has_qformer=False)
    with pytest.raises(ValueError, match=r"image_adapter must be one of \['qformer', 'group'\]"):
        config(image_adapter="perceiver")
    with pytest.raises(ValueError, match="group_size"):
        config(image_adapter="group", group_size=0)


@pytest.mark.parametrize("group_size", [2, 4, 8])
def test_group_size_sets_token_count_and_width(group_size):
    cfg = config(image_adapter="group", group_size=group_size, freeze_qformer=False)
    model = MiniGPT4(cfg, llm_hidden_size=16)
    width = TINY_VIT_CONFIG["embed_dim"]
    patches = (224 // 14) ** 2
    assert model.llama_proj.in_features == width * group_size
    assert not hasattr(model, "Qformer") and not hasattr(model, "query_tokens")
    assert "Qformer" not in trainable_names(cfg)  # freeze_qformer means nothing without one
    feats = torch.randn(2, 1 + patches, width)
    grouped = model.image_adapter.features(model, feats)
    assert grouped.shape == (2, patches // group_size, width * group_size)
    # row-order neighbours: token 0 is patches 0..g-1 side by side
    assert torch.equal(grouped[0, 0], feats[0, 1 : 1 + group_size].reshape(-1))
    assert sample_tokens(cfg) == 1 + patches // group_size + cfg.max_txt_len


def test_qformer_adapter_builds_the_originals_names():
    cfg = config(freeze_qformer=False)
    model = MiniGPT4(cfg, llm_hidden_size=16)
    assert model.llama_proj.in_features == TINY_QFORMER_CONFIG["hidden_size"]
    assert model.query_tokens.shape[1] == cfg.num_query_token
    assert {"Qformer", "query_tokens"} <= set(trainable_names(cfg))
    assert sample_tokens(cfg) == 1 + cfg.num_query_token + cfg.max_txt_len


def test_a_patch_count_that_does_not_group_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot be grouped by 3"):
        grouped_patches(torch.zeros(1, 1 + 256, 8), 3)
