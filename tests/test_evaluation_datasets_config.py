"""The ``evaluation_datasets`` section of the original's MiniGPT-v2 benchmark config: accepted,
readable as ``cfg.evaluation_datasets_cfg`` (the original's accessor), checked for typos."""

from __future__ import annotations

import argparse

import pytest
from omegaconf import OmegaConf

from minigpt4.common.config import Config
from minigpt4.common.config_error import ConfigError

TINY_EVAL = "eval_configs/minigpt4_tiny_eval.yaml"


def _config(tmp_path, section, options=()):
    cfg = OmegaConf.load(TINY_EVAL)
    if section is not None:
        cfg.evaluation_datasets = section
    path = tmp_path / "eval.yaml"
    OmegaConf.save(cfg, path)
    return Config(argparse.Namespace(cfg_path=str(path), options=list(options)))


def test_the_section_is_read_and_overridable(tmp_path):
    section = {"refcoco": {"eval_file_path": "/data/ref", "img_path": "/data/coco",
                           "max_new_tokens": 20, "batch_size": 10}}  # fmt: skip
    cfg = _config(tmp_path, section, ["evaluation_datasets.refcoco.batch_size=4"])
    assert cfg.evaluation_datasets_cfg.refcoco.eval_file_path == "/data/ref"
    assert cfg.evaluation_datasets_cfg.refcoco.batch_size == 4
    assert "evaluation_datasets" not in _config(tmp_path, None).to_dict()
    assert len(_config(tmp_path, None).evaluation_datasets_cfg) == 0


def test_a_typo_or_a_bare_value_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"evaluation_datasets.gqa.img_pth'. Did you mean"):
        _config(tmp_path, {"gqa": {"img_pth": "/x"}})
    with pytest.raises(ConfigError, match="'evaluation_datasets.gqa' must be a mapping"):
        _config(tmp_path, {"gqa": 3})
