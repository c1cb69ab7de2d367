"""train_configs/minigptv2_finetune.yaml, unchanged but for its paths (--options), builds its 22
datasets from files in the original's layouts, with its sample ratios and batch sizes."""

import sys
import types
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import minigpt4  # noqa: F401 (registers builders and models)
from minigpt4.common.config import Config
from minigpt4.common.run_config import RunConfig
from minigpt4.runners.train_data import build_train_loaders
from minigpt4.tasks.base_task import BaseTask

sys.path.insert(0, str(Path(__file__).parent))
import v2_data_formats

CONFIG = Path(__file__).resolve().parents[1] / "train_configs" / "minigptv2_finetune.yaml"
COUNT = 6  # records per format: the config's largest batch size


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    info = v2_data_formats.write_all(tmp_path_factory.mktemp("v2cfg"), count=COUNT)
    options = v2_data_formats.config_options(info) + ["run.num_workers=0"]
    return Config(types.SimpleNamespace(cfg_path=str(CONFIG), options=options))


def test_config_builds_every_dataset_with_its_ratio(cfg):
    original = OmegaConf.load(CONFIG).datasets
    datasets = BaseTask().build_datasets(cfg)
    assert list(datasets) == list(original)
    assert len(datasets) == 22
    for name, split in datasets.items():
        assert split["train"].sample_ratio == original[name].sample_ratio
        assert len(split["train"]) >= original[name].batch_size


def test_the_mix_gives_batches_of_each_datasets_size(cfg):
    original = OmegaConf.load(CONFIG).datasets
    datasets = BaseTask().build_datasets(cfg)
    run = RunConfig.from_node(cfg.run_cfg)
    loader = build_train_loaders(datasets, run, cfg.datasets_cfg, pin_memory=False)["train"]
    sizes = {int(block.batch_size) for block in original.values()}
    for _ in range(12):
        batch = next(loader)
        prompts = batch.get("instruction_input", batch.get("conv_q"))
        assert len(prompts) in sizes
        assert all(isinstance(p, str) and p for p in prompts)
