"""A wrong ``model`` value is an error naming the key and the value, before any weight loads
(issue: nothing silently wrong). Before, ``freeze_vit: maybe`` counted as true, ``max_txt_len:
1.5`` and ``image_size: abc`` were taken as given, and ``num_query_token: -1`` or
``--options model=5`` failed deep inside with a Python error."""

from __future__ import annotations

import argparse
import re

import pytest

from minigpt4.common.config import Config, ConfigError
from minigpt4.common.registry import registry
from minigpt4.models.model_config import MiniGPT4Config
from tests.model_fixtures import tiny_model_config

TINY_EVAL = "eval_configs/minigpt4_tiny_eval.yaml"


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("freeze_vit", "maybe", "must be true or false"),
        ("max_txt_len", 1.5, "must be an integer >= 1"),
        ("num_query_token", -1, "must be an integer >= 1"),
        ("image_size", "abc", "must be an integer >= 1"),
        ("drop_path_rate", 2, "must be a number in [0, 1)"),
        ("end_sym", ["#"], "must be a string"),
    ],
)
def test_wrong_model_values_name_key_and_value(key, value, words, monkeypatch):
    section = tiny_model_config(stage=2)
    section[key] = value
    monkeypatch.setattr(
        "minigpt4.models.loading.model.load_model", lambda *a: pytest.fail("weights were loaded")
    )
    with pytest.raises(ValueError, match=rf"model\.{key} = .*: {re.escape(words)}"):
        registry.get_model_class("mini_gpt4").from_config(section)


def test_words_and_numbers_as_text_are_converted():
    """What ``${oc.env:...}`` delivers (text) still works."""
    config = MiniGPT4Config.from_cfg(
        {"llama_model": "x", "freeze_vit": "false", "max_txt_len": "8"}
    )
    assert (config.freeze_vit, config.max_txt_len) == (False, 8)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["model=5"], "'model' = 5: a section must be a mapping"),
        (["run=3"], "'run' = 3: a section must be a mapping"),
        (["model.arch.x=1"], "model.arch must be a name"),
        (["model.model_type.a=b"], "model.model_type must be a name"),
    ],
)
def test_options_that_break_a_section_are_config_errors(options, words):
    with pytest.raises(ConfigError, match="--options: " + re.escape(words)):
        Config(argparse.Namespace(cfg_path=TINY_EVAL, options=options))


def test_a_model_section_that_is_a_string(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: hello\ndatasets: {}\nrun: {task: image_text_pretrain}\n")
    with pytest.raises(ConfigError, match=f"{path}: 'model' = 'hello': a section must be"):
        Config(argparse.Namespace(cfg_path=str(path), options=None))
