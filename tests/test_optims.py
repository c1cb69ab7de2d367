"""lr schedules against FACTS.md's formulas; AdamW parameter groups."""

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import minigpt4  # noqa: F401  (registers the schedulers)
from minigpt4.common.registry import registry
from minigpt4.common.run_config import RunConfig
from minigpt4.runners.optimization import build_optimizer


def make_optimizer(n_groups=2):
    params = [nn.Parameter(torch.zeros(2)) for _ in range(n_groups)]
    return torch.optim.SGD([{"params": [p]} for p in params], lr=0.5)


def cosine(**kw):
    cls = registry.get_lr_scheduler_class("linear_warmup_cosine_lr")
    return cls(optimizer=make_optimizer(), **kw)


def test_cosine_matches_the_originals_run():
    # FACTS.md e: init 1e-4, min 8e-5, warmup 1e-6, 3 warm-up steps, 4 iters/epoch, 2 epochs.
    sched = cosine(max_epoch=2, iters_per_epoch=4, min_lr=8e-5, init_lr=1e-4,
                   warmup_steps=3, warmup_start_lr=1e-6)  # fmt: skip
    assert sched.step(0, 0) == pytest.approx(1e-6)
    assert sched.step(0, 2) == pytest.approx(6.7e-5)
    assert sched.step(0, 3) == pytest.approx(9.38e-5, abs=5e-8)
    assert sched.step(1, 0) == pytest.approx(9.0e-5, abs=5e-8)
    # ...and is written into every parameter group
    assert [g["lr"] for g in sched.optimizer.param_groups] == [pytest.approx(9.0e-5, abs=5e-8)] * 2


@pytest.mark.parametrize(("epoch", "step"), [(0, 0), (0, 7), (0, 9), (1, 0), (1, 4), (2, 9)])
def test_cosine_formula(epoch, step):
    init, low, start, warm, ipe, max_epoch = 3e-5, 1e-5, 1e-6, 12, 10, 3
    sched = cosine(max_epoch=max_epoch, iters_per_epoch=ipe, min_lr=low, init_lr=init,
                   warmup_steps=warm, warmup_start_lr=start)  # fmt: skip
    total = epoch * ipe + step
    if total < warm:
        # the original's quirk: warm-up progress uses the within-epoch step
        expected = min(init, start + (init - start) * step / warm)
    else:
        expected = (init - low) * 0.5 * (1 + math.cos(math.pi * total / (max_epoch * ipe))) + low
    assert sched.step(epoch, step) == pytest.approx(expected, rel=1e-12)


def test_cosine_warmup_uses_within_epoch_step():
    sched = cosine(max_epoch=4, iters_per_epoch=5, min_lr=0.0, init_lr=1.0,
                   warmup_steps=8, warmup_start_lr=0.0)  # fmt: skip
    # global step 6 is still warm-up, but progress restarts with the epoch: 1/8, not 6/8
    assert sched.step(1, 1) == pytest.approx(1 / 8)


def test_cosine_without_warmup_lr_starts_at_init():
    sched = cosine(max_epoch=1, iters_per_epoch=10, min_lr=0.1, init_lr=1.0, warmup_steps=5)
    assert sched.step(0, 0) == pytest.approx(1.0)
    assert sched.step(0, 9) == pytest.approx(0.45 * (1 + math.cos(math.pi * 0.9)) + 0.1)


def test_step_lr():
    cls = registry.get_lr_scheduler_class("linear_warmup_step_lr")
    sched = cls(optimizer=make_optimizer(), max_epoch=5, min_lr=0.05, init_lr=1.0,
                decay_rate=0.5, warmup_start_lr=0.1, warmup_steps=4)  # fmt: skip
    assert sched.step(0, 0) == pytest.approx(0.1)
    assert sched.step(0, 2) == pytest.approx(0.1 + 0.9 * 2 / 4)
    assert sched.step(0, 10) == pytest.approx(1.0)
    assert sched.step(1, 0) == pytest.approx(0.5)
    assert sched.step(3, 7) == pytest.approx(0.125)
    assert sched.step(5, 0) == pytest.approx(0.05)  # clamped at min_lr


def test_step_lr_without_decay_rate_is_a_clear_error():
    cls = registry.get_lr_scheduler_class("linear_warmup_step_lr")
    with pytest.raises(ValueError, match="lr_decay_rate"):
        cls(optimizer=make_optimizer(), max_epoch=3, min_lr=0, init_lr=1.0, decay_rate=None)


def test_scheduler_state_round_trip():
    sched = cosine(max_epoch=2, iters_per_epoch=4, min_lr=0.1, init_lr=1.0)
    sched.step(1, 2)
    other = cosine(max_epoch=2, iters_per_epoch=4, min_lr=0.1, init_lr=1.0)
    other.load_state_dict(sched.state_dict())
    assert (other.last_epoch, other.last_step) == (1, 2)
    assert other.optimizer.param_groups[0]["lr"] == sched.optimizer.param_groups[0]["lr"]


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.llama_proj = nn.Linear(4, 6)
        self.ln_vision = nn.LayerNorm(4)
        self.kiln = nn.Linear(3, 3, bias=False)  # "ln" anywhere in the name: no decay
        self.bnorm_scale = nn.Parameter(torch.ones(3, 3))  # "bn" substring
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.vector = nn.Parameter(torch.ones(5))  # 1-D


def test_optimizer_groups_follow_the_original():
    model = Toy()
    run = RunConfig.from_node(OmegaConf.create({"init_lr": 3e-5, "weight_decay": 0.05}))
    opt = build_optimizer(model, run)
    assert isinstance(opt, torch.optim.AdamW)
    decay, no_decay = opt.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert [names[id(p)] for p in decay["params"]] == ["llama_proj.weight"]
    assert decay["weight_decay"] == 0.05
    assert sorted(names[id(p)] for p in no_decay["params"]) == sorted(
        ["llama_proj.bias", "ln_vision.weight", "ln_vision.bias", "kiln.weight",
         "bnorm_scale", "vector"]
    )  # fmt: skip
    assert no_decay["weight_decay"] == 0
    for group in opt.param_groups:
        assert group["lr"] == 3e-5
        assert group["betas"] == (0.9, 0.999)
        assert group["eps"] == 1e-8


def test_optimizer_beta2_and_no_trainable_error():
    model = Toy()
    run = RunConfig.from_node(OmegaConf.create({"init_lr": 1, "weight_decay": 0, "beta2": 0.98}))
    opt = build_optimizer(model, run)
    assert opt.param_groups[0]["betas"] == (0.9, 0.98)
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        build_optimizer(
            model, RunConfig.from_node(OmegaConf.create({"init_lr": 1, "weight_decay": 0}))
        )
