"""Training checkpoints of the MiniGPT-v2 finetune exchanged with the original's runner.

The original's ``_save_checkpoint`` writes ``{"model", "optimizer", "config", "scaler",
"epoch"}``: ``model`` is the state dict without frozen parameters (LoRA in peft 0.2.0 names,
llama_proj, the buffers), ``optimizer`` an AdamW state dict over two groups (decayed: >= 2-D
weights; not: 1-D or a name with bias/ln/bn) in the order of ``named_parameters``. Its
``_load_checkpoint`` loads ``model`` with ``load_state_dict(strict=False)``, the optimizer, the
scaler if it has one, and starts at ``epoch + 1``.

Here a file in that layout, built from set V's checkpoint and the original's parameter order
(``trainable_params`` of set V), resumes ``train.py`` at the next epoch with its weights and
optimizer state; the checkpoint ``train.py`` then writes loads the original's way into a module
with the original model's state-dict keys (set V's ``state_dict_keys``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import train
from minigpt4.models import lora
from minigpt4.runners.checkpointer import Checkpointer
from tests.model_fixtures import V2_DIR, load_v2_reference, v2_options

sys.path.insert(0, str(Path(__file__).parent))
import v2_data_formats

CONFIG = Path(__file__).resolve().parents[1] / "train_configs" / "minigptv2_finetune.yaml"
ITERS = 3  # iterations of the resumed epoch
STEPS_IN_FILE = 2  # optimizer steps the original's file has taken
WEIGHT_DECAY = OmegaConf.load(CONFIG).run.weight_decay
# What the original's GradScaler("cuda").state_dict() holds after a fp16 run's first steps.
ORIGINAL_SCALER = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                   "growth_interval": 2000, "_growth_tracker": 2}  # fmt: skip


def original_groups(names: list[str], shapes: dict[str, list]) -> tuple[list[str], list[str]]:
    """The original runner's two AdamW groups over its trainable parameters, by name: decayed,
    and not (1-D, or a name with bias/ln/bn)."""
    decayed, plain = [], []
    for name in names:
        no_decay = len(shapes[name]) < 2 or any(s in name for s in ("bias", "ln", "bn"))
        (plain if no_decay else decayed).append(name)
    return decayed, plain


def original_optimizer(ref: dict, weight_decay: float) -> tuple[torch.optim.AdamW, list[str]]:
    """AdamW over tensors of the original's trainable shapes, grouped and ordered as its runner
    does; returns it and the parameter names in the optimizer's index order."""
    shapes = {k: v[0] for k, v in ref["state_dict_keys"].items()}
    decayed, plain = original_groups(ref["trainable_params"], shapes)
    params = {name: nn.Parameter(torch.zeros(shapes[name])) for name in decayed + plain}
    optimizer = torch.optim.AdamW(
        [{"params": [params[n] for n in decayed], "weight_decay": weight_decay},
         {"params": [params[n] for n in plain], "weight_decay": 0}],
        lr=1e-5, weight_decay=weight_decay, betas=(0.9, 0.999),
    )  # fmt: skip
    return optimizer, decayed + plain


def write_original_checkpoint(ref: dict, path: Path) -> dict:
    """A training checkpoint as the original's runner writes it after epoch 0: set V's weights
    shifted (so that they differ from ``model.ckpt``) and an optimizer that has stepped."""
    model = torch.load(V2_DIR / "minigptv2_tiny_checkpoint.pth", weights_only=True)["model"]
    model = {k: v + 0.01 * (i + 1) if v.is_floating_point() and "inv_freq" not in k else v
             for i, (k, v) in enumerate(model.items())}  # fmt: skip
    optimizer, names = original_optimizer(ref, weight_decay=WEIGHT_DECAY)
    generator = torch.Generator().manual_seed(0)
    for _ in range(STEPS_IN_FILE):
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = torch.randn(p.shape, generator=generator)
        optimizer.step()
    content = {
        "model": model,
        "optimizer": optimizer.state_dict(),
        "config": OmegaConf.to_container(OmegaConf.load(CONFIG)),
        "scaler": dict(ORIGINAL_SCALER),
        "epoch": 0,
    }
    torch.save(content, path)
    return {"content": content, "names": names}


class Snapshot:
    """Wraps ``Checkpointer.resume``: keeps the model's trainable weights (original names) and the
    optimizer's state per parameter name right after the resume."""

    def __init__(self) -> None:
        self.weights: dict[str, torch.Tensor] = {}
        self.optimizer: dict[str, dict[str, torch.Tensor]] = {}
        self.weight_decay: dict[str, float] = {}

    def wrap(self, resume):
        def resumed(checkpointer, *args, **kwargs):
            point = resume(checkpointer, *args, **kwargs)
            model = checkpointer.strategy.unwrap(checkpointer.parts.model)
            named = dict(lora.to_original_names(dict(model.named_parameters())))
            self.weights = {k: p.detach().clone() for k, p in named.items() if p.requires_grad}
            by_id = {id(p): k for k, p in named.items()}
            for group in checkpointer.parts.optimizer.param_groups:
                for p in group["params"]:
                    state = checkpointer.parts.optimizer.state[p]
                    self.optimizer[by_id[id(p)]] = {k: v.clone() for k, v in state.items()}
                    self.weight_decay[by_id[id(p)]] = group["weight_decay"]
            return point

        return resumed


@pytest.fixture(scope="module")
def ref():
    return load_v2_reference()


@pytest.fixture(scope="module")
def resumed(ref, tmp_path_factory):
    """``train.py`` with the finetune config (generated data, tiny set-V model), resumed from the
    original-layout checkpoint of epoch 0 and run for epoch 1."""
    root = tmp_path_factory.mktemp("v2exchange")
    original = write_original_checkpoint(ref, root / "checkpoint_0.pth")
    info = v2_data_formats.write_all(root / "data", count=6)
    options = v2_options(ref["tiny_hparams"]) + v2_data_formats.config_options(info)
    options += ["run.device=cpu", "run.max_epoch=2", f"run.iters_per_epoch={ITERS}",
                "run.num_workers=0", "run.amp=False", "run.wandb_log=False",
                "run.warmup_steps=2", "run.distributed=False", f"run.output_dir={root / 'out'}",
                f"run.resume_ckpt_path={root / 'checkpoint_0.pth'}"]  # fmt: skip
    snapshot = Snapshot()
    patch = pytest.MonkeyPatch()
    patch.setattr(Checkpointer, "resume", snapshot.wrap(Checkpointer.resume))
    handler = MessageList()
    logging.getLogger().addHandler(handler)
    try:
        train.main(["--cfg-path", str(CONFIG), "--options", *options])
    finally:
        logging.getLogger().removeHandler(handler)
        patch.undo()
    (job,) = (root / "out").iterdir()
    return {"original": original, "snapshot": snapshot, "log": handler.messages, "job": job,
            "path": root / "checkpoint_0.pth"}  # fmt: skip


class MessageList(logging.Handler):
    """Every log message of the run (caplog is per test; the run is shared)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_resumes_at_the_next_epoch_with_a_clear_log_line(resumed):
    log, path = resumed["log"], resumed["path"]
    assert f"Resume checkpoint from {path}" in log
    assert any(m.startswith("Resuming at epoch 1 from a checkpoint in the original's layout")
               for m in log), log  # fmt: skip
    assert f"Start training epoch 1, {ITERS} iters per inner epoch." in log
    assert not any(m.startswith("Start training epoch 0") for m in log)
    assert not (resumed["job"] / "checkpoint_0.pth").exists()
    assert (resumed["job"] / "checkpoint_1.pth").exists()


def test_the_files_weights_and_optimizer_state_are_restored(resumed):
    content, names = resumed["original"]["content"], resumed["original"]["names"]
    snapshot = resumed["snapshot"]
    trainable = {k: v for k, v in content["model"].items() if "inv_freq" not in k}
    assert sorted(snapshot.weights) == sorted(trainable)
    for key, value in trainable.items():
        assert torch.equal(snapshot.weights[key], value), key
    # The file's optimizer state is indexed in the original's order: each index lands on the
    # parameter of the same name here, in the same weight-decay group.
    groups = content["optimizer"]["param_groups"]
    assert sorted(snapshot.optimizer) == sorted(names)
    for group in groups:
        for index in group["params"]:
            name = names[index]
            assert snapshot.weight_decay[name] == group["weight_decay"], name
            for field, value in content["optimizer"]["state"][index].items():
                assert torch.equal(snapshot.optimizer[name][field], value), (name, field)


def test_training_continues_the_files_optimizer(resumed):
    saved = torch.load(resumed["job"] / "checkpoint_1.pth", weights_only=True)
    assert saved["epoch"] == 1
    steps = {int(state["step"]) for state in saved["optimizer"]["state"].values()}
    assert steps == {STEPS_IN_FILE + ITERS}


def module_with_keys(spec: dict[str, list]) -> nn.Module:
    """A stand-in for the original's model: a module whose state dict has exactly ``spec``'s
    keys and shapes (``load_state_dict`` matches by name and checks shapes)."""
    root = nn.Module()
    for key, (shape, _dtype) in spec.items():
        *path, leaf = key.split(".")
        module = root
        for part in path:
            if part not in module._modules:
                module.add_module(part, nn.Module())
            module = module._modules[part]
        module.register_buffer(leaf, torch.zeros(shape))
    return root


def test_the_checkpoint_written_here_loads_the_originals_way(ref, resumed):
    """The original's ``_load_checkpoint`` on ``checkpoint_1.pth``: every saved key is one of
    the original model's, each trainable weight is there, the optimizer state fits the
    original's groups index by index, and it starts at ``epoch + 1``."""
    saved = torch.load(resumed["job"] / "checkpoint_1.pth", map_location="cpu")
    original_model = module_with_keys(ref["state_dict_keys"])
    message = original_model.load_state_dict(saved["model"], strict=False)
    assert message.unexpected_keys == []
    # Trainable weights only; the rotary inv_freq buffers (which the original also saves) are
    # recomputed at its init, so their absence loads the same model.
    assert sorted(saved["model"]) == sorted(ref["trainable_params"])
    assert set(message.missing_keys) == set(ref["state_dict_keys"]) - set(saved["model"])
    loaded = original_model.state_dict()
    for key, value in saved["model"].items():
        assert torch.equal(loaded[key], value), key
    optimizer, _ = original_optimizer(ref, weight_decay=WEIGHT_DECAY)
    optimizer.load_state_dict(saved["optimizer"])
    for group in optimizer.param_groups:
        for param in group["params"]:
            for field, value in optimizer.state[param].items():
                assert value.dim() == 0 or value.shape == param.shape, field
    assert saved["scaler"] is None  # a CPU fp32 run has none; the original skips a None
    assert saved["epoch"] + 1 == 2  # the original's start_epoch
