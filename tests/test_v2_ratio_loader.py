"""MiniGPT-v2's mix of 22 datasets: one dataset per batch drawn like the original's
MultiIterLoader (same draws under the same seed), and an exact resume of the mix."""

import json
import random
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import minigpt4  # noqa: F401 (registers the builders)
from minigpt4.common.registry import registry
from minigpt4.common.run_config import RunConfig
from minigpt4.datasets.datasets.dataloader_utils import MultiIterLoader
from minigpt4.runners.train_data import build_train_loaders

sys.path.insert(0, str(Path(__file__).parent))
import v2_data_formats

ORIGINAL = json.loads(
    (Path(__file__).parent / "fixtures" / "v2_original_samples" / "samples.json").read_text()
)["multi_iter_loader"]
RATIOS = dict(ORIGINAL["ratios"])  # the finetune config's datasets and sample_ratios, in order


def pure_mix():
    """The finetune ratios over endless streams that yield their dataset's name."""
    return MultiIterLoader([iter(lambda n=n: n, None) for n in RATIOS], list(RATIOS.values()))


def test_draws_equal_the_original_multi_iter_loader():
    random.seed(ORIGINAL["seed"])
    mix = pure_mix()
    assert [next(mix) for _ in ORIGINAL["draws"]] == ORIGINAL["draws"]
    assert len(set(ORIGINAL["draws"])) == len(RATIOS)  # every dataset was drawn


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    info = v2_data_formats.write_all(tmp_path_factory.mktemp("v2mix"))
    out = {}
    for name, ratio in RATIOS.items():
        cfg = OmegaConf.create(
            {
                "build_info": info[name],
                "vis_processor": {"train": {"name": "blip2_image_train", "image_size": 16}},
                "text_processor": {"train": {"name": "blip_caption"}},
            }
        )
        dataset = registry.get_builder_class(name)(cfg, name=name).build_datasets()
        dataset["train"].name = name  # as BaseTask.build_datasets sets them
        dataset["train"].sample_ratio = ratio
        out[name] = dataset
    return out


def mix(datasets):
    run = RunConfig.from_node(
        OmegaConf.create({"seed": 42, "num_workers": 0, "train_splits": ["train"]})
    )
    cfg = OmegaConf.create({name: {"batch_size": 2} for name in RATIOS})
    return build_train_loaders(datasets, run, cfg, pin_memory=False)["train"]


def texts(batch):
    keys = ("instruction_input", "answer", "conv_q", "conv_a")
    return {key: list(batch[key]) for key in keys if key in batch}


def test_the_mix_of_every_dataset_draws_as_the_original_and_resumes_exactly(datasets):
    steps, stop = 40, 15
    random.seed(ORIGINAL["seed"])
    loader = mix(datasets)
    batches = []
    for step in range(steps):
        if step == stop:
            saved, rng = loader.state_dict(), random.getstate()
        batches.append(texts(next(loader)))
    # The datasets' template draws do not touch the main process's generator: the choice of
    # dataset per batch is the original's MultiIterLoader sequence.
    random.seed(ORIGINAL["seed"])
    reference = pure_mix()
    for _ in range(steps):
        next(reference)
    after_pure = random.getstate()
    random.seed(ORIGINAL["seed"])
    loader2 = mix(datasets)
    for _ in range(steps):
        next(loader2)
    assert random.getstate() == after_pure

    resumed = mix(datasets)
    assert resumed.load_state_dict(saved) == []
    random.setstate(rng)
    assert [texts(next(resumed)) for _ in range(steps - stop)] == batches[stop:]
    assert len({json.dumps(b, sort_keys=True) for b in batches}) > steps // 2  # varied batches
