"""runner_base and the training loop with a small stand-in model (fast, CPU).

The real tiny MiniGPT-4 runs through the same code in tests/test_train_*.py; here a toy model
with one trainable Linear (named llama_proj), a frozen part, a buffer, dropout and Python
``random`` makes every mechanism visible and cheap.
"""

import json
import logging
import math
import os
import random
import re

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import minigpt4  # noqa: F401  (registers task, runner, schedulers)
from minigpt4.common.checkpoint_files import CheckpointError
from minigpt4.common.config_error import ConfigError
from minigpt4.common.registry import registry
from minigpt4.runners.runner_base import RunnerBase
from minigpt4.runners.strategy import build_strategy
from minigpt4.runners.train_data import records_line
from minigpt4.tasks.image_text_pretrain import ImageTextPretrainTask


class ToyConfig:
    """What the runner reads from minigpt4.common.config.Config."""

    def __init__(self, run):
        self.config = OmegaConf.create({"run": run, "model": {"arch": "toy"}, "datasets": {}})

    @property
    def run_cfg(self):
        return self.config.run

    @property
    def datasets_cfg(self):
        return self.config.datasets

    def to_dict(self):
        return OmegaConf.to_container(self.config, resolve=True)


class ToyModel(nn.Module):
    def __init__(self, fail_at=None):
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.encoder.requires_grad_(False)
        self.llama_proj = nn.Linear(4, 3)
        self.register_buffer("position_ids", torch.arange(5))
        self.dropout = nn.Dropout(0.2)  # consumes the torch RNG
        self.calls = 0
        self.fail_at = fail_at
        self.seen_lrs = []
        self.optimizer = None

    def forward(self, samples):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt("simulated kill")
        if self.optimizer is not None:
            self.seen_lrs.append(self.optimizer.param_groups[0]["lr"])
        x = self.dropout(self.encoder(samples["image"]))
        target = torch.full((x.shape[0], 3), random.random())  # consumes Python random
        return {"loss": ((self.llama_proj(x) - target) ** 2).mean()}


class ToyData(torch.utils.data.Dataset):
    def __init__(self, n=10):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        noise = torch.rand(4) * 0.01  # augmentation: consumes the torch RNG
        return {"image": torch.full((4,), float(i)) / self.n + noise, "text_input": f"s{i}"}


def run_cfg(output_dir, **kw):
    run = {
        "task": "image_text_pretrain",
        "lr_sched": "linear_warmup_cosine_lr",
        "init_lr": 0.1,
        "min_lr": 0.01,
        "warmup_lr": 0.001,
        "warmup_steps": 2,
        "weight_decay": 0.05,
        "max_epoch": 2,
        "iters_per_epoch": 4,
        "batch_size_train": 2,
        "batch_size_eval": 2,
        "num_workers": 0,
        "seed": 42,
        "output_dir": str(output_dir),
        "amp": False,
        "resume_ckpt_path": None,
        "evaluate": False,
        "train_splits": ["train"],
        "device": "cpu",
        "log_freq": 1,
    }
    run.update(kw)
    return run


def seed_all(seed=42):
    random.seed(seed)
    torch.manual_seed(seed)


def make_runner(output_dir, model=None, datasets=None, job_id="job", fail_at=None, **kw):
    seed_all()  # before building the model: its init draws from the torch RNG
    model = model or ToyModel(fail_at=fail_at)
    data = ToyData()
    data.name = "toy"
    datasets = datasets or {"toy": {"train": data}}
    return RunnerBase(ToyConfig(run_cfg(output_dir, **kw)), ImageTextPretrainTask(), model,
                      datasets, job_id)  # fmt: skip


def test_registry_names():
    assert registry.get_runner_class("runner_base") is RunnerBase
    assert registry.get_task_class("image_text_pretrain") is ImageTextPretrainTask


LINE = re.compile(
    r"^Train: data epoch: \[(\d)\]  \[ ?(\d+)/(\d+)\]  eta: \d+:\d\d:\d\d  lr: (\d\.\d{6})  "
    r"loss: \d+\.\d{4}  time: \d+\.\d{4}  data: \d+\.\d{4}( {2}max mem: \d+)?$"
)


def test_console_lines_log_and_checkpoint(tmp_path, caplog):
    runner = make_runner(tmp_path / "out", iters_per_epoch=12, log_freq=5, max_epoch=1)
    with caplog.at_level(logging.INFO):
        runner.train()
    messages = [r.getMessage() for r in caplog.records]
    progress = [m for m in messages if m.startswith("Train: data epoch: [0]  [")]
    assert [LINE.match(m).group(2) for m in progress] == ["0", "5", "10", "11"]
    assert progress[0].startswith("Train: data epoch: [0]  [ 0/12]  eta: ")
    for m in progress:
        assert (LINE.match(m).group(5) is not None) == torch.cuda.is_available()
    assert re.match(r"^Train: data epoch: \[0\] Total time: \d+:\d\d:\d\d \(\d+\.\d{4} s / it\)$",
                    messages[messages.index(progress[-1]) + 1])  # fmt: skip
    averaged = [m for m in messages if m.startswith("Averaged stats: ")]
    assert len(averaged) == 1
    assert re.match(r"^Averaged stats: lr: \d\.\d{4}  loss: \d+\.\d{4}$", averaged[0])
    for expected in ("Start training", "Start training epoch 0, 12 iters per inner epoch.",
                     "number of trainable parameters: 15", "No validation splits found.",
                     "Loaded 10 records for train split from the dataset."):  # fmt: skip
        assert expected in messages
    out = tmp_path / "out" / "job"
    assert f"Saving checkpoint at epoch 0 to {out / 'checkpoint_0.pth'}." in messages
    assert re.match(r"^Training time \d+:\d\d:\d\d$", messages[-1])

    # log.txt: the config as indented JSON, then one stats line per epoch
    text = (out / "log.txt").read_text()
    config_json, stats_line = text.rsplit("}\n", 2)[0] + "}", text.strip().splitlines()[-1]
    assert json.loads(config_json) == runner.config.to_dict()
    stats = json.loads(stats_line)
    lrs = [runner.lr_scheduler.lr_at(0, i) for i in range(12)]
    assert stats["train_lr"] == f"{sum(lrs) / 12:.3f}"
    assert set(stats) == {"train_lr", "train_loss"} and re.match(
        r"^\d+\.\d{3}$", stats["train_loss"]
    )
    assert OmegaConf.load(out / "config.yaml") == OmegaConf.create(runner.config.to_dict())


def test_checkpoint_content(tmp_path):
    runner = make_runner(tmp_path, max_epoch=1)
    runner.train()
    path = tmp_path / "job" / "checkpoint_0.pth"
    ckpt = torch.load(path, weights_only=True)
    assert {"model", "optimizer", "config", "scaler", "epoch"} <= set(ckpt)
    # frozen parameters dropped, buffers kept (the original's save)
    assert set(ckpt["model"]) == {"llama_proj.weight", "llama_proj.bias", "position_ids"}
    assert ckpt["epoch"] == 0 and ckpt["scaler"] is None
    assert ckpt["config"] == runner.config.to_dict()
    torch.testing.assert_close(ckpt["model"]["llama_proj.weight"], runner.model.llama_proj.weight)
    assert sorted(os.listdir(tmp_path / "job")) == ["checkpoint_0.pth", "config.yaml", "log.txt",
                                                   "result"]  # fmt: skip


def test_only_trainable_weights_change_and_lr_is_set_before_forward(tmp_path):
    model = ToyModel()
    frozen = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    proj = model.llama_proj.weight.detach().clone()
    runner = make_runner(tmp_path, model=model, max_epoch=2)
    runner.setup()
    model.optimizer = runner.optimizer
    runner.train()
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v, frozen[k])
    assert not torch.equal(model.llama_proj.weight, proj)
    sched = runner.lr_scheduler
    assert model.seen_lrs == [sched.lr_at(e, i) for e in range(2) for i in range(4)]


def test_gradient_accumulation_averages(tmp_path):
    class Linear(nn.Module):
        def __init__(self):
            super().__init__()
            self.llama_proj = nn.Linear(4, 1, bias=False)

        def forward(self, samples):
            return {"loss": self.llama_proj(samples["image"]).pow(2).mean()}

    class Rows(torch.utils.data.Dataset):
        def __init__(self, rows):
            self.rows = rows

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            return {"image": self.rows[i]}

    model = Linear()
    w0 = model.llama_proj.weight.detach().clone()
    rows = torch.randn(4, 4)
    data = Rows(rows)
    data.name = "rows"
    runner = make_runner(tmp_path, model=model, datasets={"rows": {"train": data}}, max_epoch=1,
                         iters_per_epoch=2, accum_grad_iters=2, batch_size_train=2)  # fmt: skip
    runner.setup()
    runner.optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    runner.lr_scheduler.step = lambda cur_epoch, cur_step: None  # a constant lr
    runner.train_epoch(0)
    # d/dw mean((x w)^2) = 2/B * x^T (x w) per batch of B=2; one step with the mean over the two
    # batches (whichever rows each holds): the sum over all four rows, halved.
    grad_sum = rows.T @ (rows @ w0.T)
    expected = w0 - 0.5 * grad_sum.T / 2
    torch.testing.assert_close(model.llama_proj.weight.detach(), expected)


def final_state(path):
    ckpt = torch.load(path, weights_only=True)
    return ckpt["model"], ckpt["optimizer"]["state"]


def assert_same_state(a, b):
    (model_a, opt_a), (model_b, opt_b) = a, b
    for k in model_a:
        torch.testing.assert_close(model_a[k], model_b[k], rtol=0, atol=0)
    for k in opt_a:
        for name in opt_a[k]:
            torch.testing.assert_close(opt_a[k][name], opt_b[k][name], rtol=0, atol=0)


def test_resume_after_epoch_gives_the_same_weights(tmp_path, caplog):
    make_runner(tmp_path / "a", max_epoch=3).train()
    uninterrupted = final_state(tmp_path / "a" / "job" / "checkpoint_2.pth")

    ckpt_0 = str(tmp_path / "a" / "job" / "checkpoint_0.pth")
    resumed = make_runner(tmp_path / "b", max_epoch=3, resume_ckpt_path=ckpt_0)
    caplog.clear()  # only the resumed run's messages (the first run may have logged too)
    with caplog.at_level(logging.INFO):
        resumed.train()
    assert "Start training epoch 0, 4 iters per inner epoch." not in caplog.messages
    assert "Start training epoch 1, 4 iters per inner epoch." in caplog.messages
    assert not (tmp_path / "b" / "job" / "checkpoint_0.pth").exists()
    assert_same_state(final_state(tmp_path / "b" / "job" / "checkpoint_2.pth"), uninterrupted)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_killed_run_resumes_from_the_last_iteration_checkpoint(tmp_path, caplog, num_workers):
    """Exact with DataLoader workers too: each item's augmentation is seeded by its pass and
    position, not by a worker's RNG state (which a restarted worker cannot have)."""
    make_runner(tmp_path / "a", max_epoch=2, save_freq_iters=3, num_workers=num_workers).train()
    uninterrupted = final_state(tmp_path / "a" / "job" / "checkpoint_1.pth")

    # killed during iteration 6 (epoch 1, i=1): the last periodic save was after 3 iterations
    killed = make_runner(tmp_path / "b", fail_at=6, max_epoch=2, save_freq_iters=3,
                         num_workers=num_workers)  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    latest = tmp_path / "b" / "job" / "checkpoint_latest.pth"
    state = torch.load(latest, weights_only=True)["train_state"]
    assert (state["next_epoch"], state["next_iter"]) == (1, 0)  # written at the end of epoch 0

    killed2 = make_runner(tmp_path / "c", fail_at=4, max_epoch=2, num_workers=num_workers,
                          save_freq_iters=3, resume_ckpt_path=str(latest))  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        killed2.train()  # dies in epoch 1 at i=3, after the save at 3 iterations
    latest2 = tmp_path / "c" / "job" / "checkpoint_latest.pth"
    state = torch.load(latest2, weights_only=True)["train_state"]
    assert (state["next_epoch"], state["next_iter"]) == (1, 3)

    final = make_runner(tmp_path / "d", max_epoch=2, save_freq_iters=3, num_workers=num_workers,
                        resume_ckpt_path=str(latest2))  # fmt: skip
    with caplog.at_level(logging.INFO):
        final.train()
    assert any(m.startswith("Train: data epoch: [1]  [3/4]") for m in caplog.messages)
    assert not any("cannot be exact" in m for m in caplog.messages)
    assert_same_state(final_state(tmp_path / "d" / "job" / "checkpoint_1.pth"), uninterrupted)


def test_resume_from_missing_checkpoint_is_an_error(tmp_path):
    runner = make_runner(tmp_path, resume_ckpt_path=str(tmp_path / "nope.pth"))
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        runner.train()


def test_output_dir_is_relative_to_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = make_runner("output/toy", job_id="20261128121")
    assert runner.output_dir == str(tmp_path / "output" / "toy" / "20261128121")
    assert os.path.isdir(runner.output_dir)


def test_cuda_device_falls_back_to_cpu_with_warning(tmp_path, caplog):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with caplog.at_level(logging.WARNING):
        runner = make_runner(tmp_path, device="cuda", amp=True)
        runner.setup()
    assert runner.device == torch.device("cpu")
    assert runner.precision.autocast is None and runner.scaler is None
    assert any("CUDA is not available" in m for m in caplog.messages)


def test_two_datasets_mixed_by_sample_ratio(tmp_path):
    a, b = ToyData(8), ToyData(8)
    a.sample_ratio, b.sample_ratio = 3, 1
    runner = make_runner(tmp_path, datasets={"a": {"train": a}, "b": {"train": b}})
    runner.setup()
    loader = runner.train_loader
    assert loader.ratios == [0.75, 0.25]
    assert len(loader.loaders) == 2 and math.isclose(sum(loader.ratios), 1)


def test_resume_from_a_checkpoint_of_the_original(tmp_path, caplog):
    """Only the original's keys: weights, optimizer and epoch are restored, RNG cannot be."""
    make_runner(tmp_path / "a", max_epoch=1).train()
    ckpt = torch.load(tmp_path / "a" / "job" / "checkpoint_0.pth", weights_only=True)
    original = {k: ckpt[k] for k in ("model", "optimizer", "config", "scaler", "epoch")}
    torch.save(original, tmp_path / "original.pth")
    runner = make_runner(
        tmp_path / "b", max_epoch=2, resume_ckpt_path=str(tmp_path / "original.pth")
    )
    caplog.clear()  # only the resumed run's messages
    with caplog.at_level(logging.INFO):
        runner.train()
    assert "Start training epoch 1, 4 iters per inner epoch." in caplog.messages
    assert "Start training epoch 0, 4 iters per inner epoch." not in caplog.messages
    assert any("holds no RNG/data state" in m for m in caplog.messages)
    assert runner.optimizer.state_dict()["state"][0]["step"] == 8  # 4 restored + 4 new


def test_checkpoint_of_another_model_is_rejected(tmp_path):
    torch.save({"model": {"other.weight": torch.zeros(1)}, "optimizer": {}, "epoch": 0},
               tmp_path / "other.pth")  # fmt: skip
    runner = make_runner(tmp_path, resume_ckpt_path=str(tmp_path / "other.pth"))
    expected = r"run.resume_ckpt_path: .*other.pth lacks the trainable weights \['llama_proj.bias'"
    with pytest.raises(CheckpointError, match=expected):
        runner.train()


def test_second_run_in_the_same_job_id_does_not_overwrite(tmp_path, caplog):
    make_runner(tmp_path, max_epoch=1, job_id="20261128121").train()
    with caplog.at_level(logging.WARNING):
        second = make_runner(tmp_path, max_epoch=1, job_id="20261128121")
    assert second.output_dir == str(tmp_path / "20261128121_1")
    assert any("already holds a run" in m for m in caplog.messages)
    second.train()
    assert (tmp_path / "20261128121" / "checkpoint_0.pth").exists()
    assert (tmp_path / "20261128121_1" / "checkpoint_0.pth").exists()


def test_strategy_follows_the_launch_unless_the_config_names_one(tmp_path):
    assert make_runner(tmp_path / "a").strategy.name == "single"  # no process group
    assert build_strategy(None, distributed=True, world_size=2).name == "ddp"
    with pytest.raises(ValueError, match="run.strategy is 'ddp' but this process is not part"):
        make_runner(tmp_path / "b", strategy="ddp")
    with pytest.raises(ValueError, match="run.strategy is 'single' but 2 processes"):
        build_strategy("single", distributed=True, world_size=2)
    with pytest.raises(ConfigError, match="run.strategy"):
        make_runner(tmp_path / "c", strategy="fsdp")


class _Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        yield from range(3)


def test_records_line_says_what_a_stream_holds():
    """A webdataset stream has no record count: the log says so instead of "Loaded 0 records"."""
    assert records_line({"align": list(range(7))}, "train") == (
        "Loaded 7 records for train split from the dataset."
    )
    line = records_line({"laion": _Stream(), "align": list(range(7))}, "train")
    assert line == (
        "Loaded the train split: webdataset streams of laion and 7 records (a stream has no "
        "record count; run.iters_per_epoch sets the epoch's length)."
    )
    assert "0 records" not in records_line({"laion": _Stream()}, "train")
