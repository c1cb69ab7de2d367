"""The paper's MiniGPT-v2 stage-1 and stage-2 recipes as configs (reconstructed: the original never
released them): they hold the paper's numbers, build their datasets through the project's Config
from files in the original's layouts, fail naming the dataset and path when data is missing, and
train end to end on CPU with the tiny set-V model, stage 2 starting from stage 1's checkpoint."""

import sys
import types
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import minigpt4  # noqa: F401 (registers builders and models)
import train
from minigpt4.common.config import Config
from minigpt4.common.run_config import RunConfig
from minigpt4.datasets.datasets import dataloader_utils
from minigpt4.datasets.v2.templates import CAPTION_POOL, CAPTION_TAG, image_instruction
from minigpt4.tasks.base_task import BaseTask
from tests.model_fixtures import load_v2_reference, v2_options
from tests.train_helpers import write_shards

sys.path.insert(0, str(Path(__file__).parent))
import v2_data_formats

REPO = Path(__file__).resolve().parents[1]
STAGE1 = REPO / "train_configs" / "minigptv2_stage1_pretrain.yaml"
STAGE2 = REPO / "train_configs" / "minigptv2_stage2_multitask.yaml"
FINETUNE = REPO / "train_configs" / "minigptv2_finetune.yaml"
WEAK = ("laion", "cc_sbu")  # the weakly-labelled image-text pairs of stage 1
# The paper's numbers (arXiv 2310.09478, implementation details): steps, global batch on its
# 4 GPUs, maximum lr.
PAPER = {STAGE1: (400_000, 96, 1e-4), STAGE2: (50_000, 64, 1e-5)}
PAPER_GPUS = 4
ITERS = 12  # per epoch in the CPU runs: the stage-1 mix draws both kinds within these (seed 42)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("v2stages")
    info = v2_data_formats.write_all(root, count=3)
    for name in WEAK:
        info[name] = {"storage": write_shards(root / name, n_shards=2, per_shard=3)}
    return info


def data_options(config: Path, info: dict) -> list[str]:
    names = set(OmegaConf.load(config).datasets)
    return v2_data_formats.config_options({k: v for k, v in info.items() if k in names})


def load(config: Path, options: list[str]) -> Config:
    return Config(types.SimpleNamespace(cfg_path=str(config), options=options))


@pytest.mark.parametrize("config", [STAGE1, STAGE2], ids=["stage1", "stage2"])
def test_configs_hold_the_papers_numbers(config):
    steps, global_batch, lr = PAPER[config]
    cfg = load(config, [])
    run = RunConfig.from_node(cfg.run_cfg, training=True)
    assert run.max_epoch * run.iters_per_epoch == steps
    assert run.init_lr == lr and run.lr_sched == "linear_warmup_cosine_lr"
    datasets = OmegaConf.load(config).datasets
    assert {block.batch_size * PAPER_GPUS for block in datasets.values()} == {global_batch}
    model = cfg.model_cfg
    assert (model.arch, model.image_size, model.lora_r, model.chat_template) == (
        "minigpt_v2",
        448,
        64,
        True,
    )
    for block in datasets.values():
        assert block.vis_processor.train.image_size == 448
    text = config.read_text()
    assert "RECONSTRUCTED FROM THE PAPER" in text and "2310.09478" in text


def test_stage_datasets_are_the_papers():
    """Stage 2: the fine-grained datasets only (no instruction or conversation data, which
    stage 3 adds); stage 1: the same plus the weakly-labelled pairs."""
    stage1 = list(OmegaConf.load(STAGE1).datasets)
    stage2 = list(OmegaConf.load(STAGE2).datasets)
    finetune = set(OmegaConf.load(FINETUNE).datasets)
    stage3_only = {"llava_detail", "llava_reason", "llava_conversation", "multitask_conversation",
                   "unnatural_instruction", "flickr_grounded_caption", "flickr_CaptionToPhrase",
                   "flickr_ObjectToPhrase"}  # fmt: skip
    assert set(stage2) == finetune - stage3_only
    assert set(stage1) == set(stage2) | set(WEAK)
    ratios = OmegaConf.load(STAGE1).datasets
    weak = sum(ratios[n].sample_ratio for n in WEAK)
    assert weak > sum(ratios[n].sample_ratio for n in stage2)  # the paper's "high ratio"


def test_caption_prompts_are_the_datasets_caption_templates():
    """LAION and CC/SBU samples have no instruction: they get one of the [caption] templates
    the caption datasets draw from."""
    cfg = OmegaConf.load(STAGE1).model
    lines = (REPO / cfg.prompt_path).read_text().splitlines()
    assert lines == [
        image_instruction(CAPTION_TAG.format(t.strip())).rstrip() for t in CAPTION_POOL
    ]


@pytest.mark.parametrize("config", [STAGE1, STAGE2], ids=["stage1", "stage2"])
def test_configs_build_their_datasets(config, data):
    cfg = load(config, data_options(config, data) + ["run.num_workers=0"])
    datasets = BaseTask().build_datasets(cfg)
    blocks = OmegaConf.load(config).datasets
    assert list(datasets) == list(blocks)
    for name, split in datasets.items():
        assert split["train"].sample_ratio == blocks[name].sample_ratio


@pytest.mark.parametrize(
    ("config", "first"), [(STAGE1, "laion"), (STAGE2, "coco_caption")], ids=["stage1", "stage2"]
)
def test_missing_data_names_the_dataset_and_path(config, first):
    with pytest.raises(FileNotFoundError, match=rf"dataset '{first}'.*/path/to/"):
        BaseTask().build_datasets(load(config, []))


def train_stage(config: Path, info: dict, output: Path, *extra: str) -> Path:
    """A short CPU run of ``config`` with the tiny set-V model; every dataset's batch at 2."""
    names = list(OmegaConf.load(config).datasets)
    options = v2_options(load_v2_reference()["tiny_hparams"]) + data_options(config, info)
    options += [f"datasets.{n}.batch_size=2" for n in names]
    options += ["run.device=cpu", "run.max_epoch=1", f"run.iters_per_epoch={ITERS}",
                "run.num_workers=0", "run.amp=False", "run.distributed=False",
                "run.warmup_steps=2", f"run.output_dir={output}", *extra]  # fmt: skip
    train.main(["--cfg-path", str(config), "--options", *options])
    (job,) = output.iterdir()
    return job


def test_stage1_then_stage2_train_end_to_end(data, tmp_path, monkeypatch, caplog):
    draws: list[int] = []
    choices = dataloader_utils.random.choices

    def logged(population, weights=None, **kwargs):
        picked = choices(population, weights, **kwargs)
        draws.append(picked[0])
        return picked

    monkeypatch.setattr(dataloader_utils, "random", types.SimpleNamespace(choices=logged))
    monkeypatch.chdir(tmp_path)
    stage1 = train_stage(STAGE1, data, tmp_path / "stage1", "model.ckpt=")
    assert f"Load {len(CAPTION_POOL)} training prompts" in caplog.messages
    names = list(OmegaConf.load(STAGE1).datasets)
    drawn = {names[i] for i in draws}
    assert drawn & set(WEAK) and drawn - set(WEAK), drawn  # both kinds of batch trained
    first = torch.load(stage1 / "checkpoint_0.pth", weights_only=True)["model"]
    stage2 = train_stage(STAGE2, data, tmp_path / "stage2",
                         f"model.ckpt={stage1 / 'checkpoint_0.pth'}")  # fmt: skip
    second = torch.load(stage2 / "checkpoint_0.pth", weights_only=True)["model"]
    assert first.keys() == second.keys()
    assert "llama_proj.weight" in second and any(".lora_B." in k for k in second)
    assert any(not torch.equal(first[k], second[k]) for k in first)  # stage 2 trained on
