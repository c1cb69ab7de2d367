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


def test_every_dataset_resizes_images_as_the_originals_head_does(cfg):
    """HEAD's blip2_image_train is a plain 448 x 448 resize (set V: the training input equals
    the eval processor's); v1's random crop would move objects away from their boxes."""
    import torch
    from PIL import Image

    from minigpt4.processors.blip_processors import Blip2ImageEvalProcessor

    image = Image.new("RGB", (300, 200), "navy")
    image.paste((255, 0, 0), (10, 10, 60, 50))  # a box the crop would move or cut
    expected = Blip2ImageEvalProcessor(image_size=448)(image)
    for name, split in BaseTask().build_datasets(cfg).items():
        processor = getattr(split["train"], "vis_processor", None)
        if name == "unnatural_instruction":  # text only
            assert processor is None
            continue
        for _ in range(3):
            assert torch.equal(processor(image), expected), name


def test_blip2_image_train_keeps_v1s_random_crop_elsewhere():
    from PIL import Image

    from minigpt4.processors.blip_processors import Blip2ImageTrainProcessor

    image = Image.new("RGB", (300, 200), "navy")
    image.paste((255, 0, 0), (10, 10, 60, 50))
    processor = Blip2ImageTrainProcessor.from_config(OmegaConf.create({"image_size": 64}))
    outputs = {processor(image).sum().item() for _ in range(8)}
    assert len(outputs) > 1  # random crops differ
