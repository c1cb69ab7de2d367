"""The typed ``run`` section (issue 22, item 2): every value checked when the Config is built.

Each mistake must fail in ``Config(...)``, before any model loads, with a message that names the
key, the value, where it came from (the YAML file or ``--options``) and what is allowed.
"""

import dataclasses
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import minigpt4  # noqa: F401  (registers tasks, runners and lr schedulers: the allowed names)
import train
from minigpt4.common import dist_utils
from minigpt4.common.config import Config, ConfigError
from minigpt4.common.config_fields import parse_value, rule_of
from minigpt4.common.run_config import RunConfig
from tests.train_helpers import write_align_folder, write_stage2_config

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(
    str(p.relative_to(REPO))
    for d in ("train_configs", "eval_configs")
    for p in (REPO / d).glob("*.yaml")
)

# (key, bad value, what the message says is allowed): the mistakes issue 22 lists ...
LISTED = [
    ("init_lr", "abc", "must be a positive number"),
    ("log_freq", 0, "must be an integer >= 1"),
    ("accum_grad_iters", 0, "must be an integer >= 1"),
    ("max_epoch", -1, "must be an integer >= 1"),
    ("max_epoch", 0, "must be an integer >= 1"),
    ("save_freq_iters", -1, "must be an integer >= 0"),
    ("iters_per_epoch", 0, "must be an integer >= 1"),
    ("batch_size_train", 0, "must be an integer >= 1"),
    ("batch_size_eval", -2, "must be an integer >= 1"),
]
# ... and some nobody listed, caught by the same field type + rule mechanism.
UNLISTED = [
    ("amp", "maybe", "must be true or false"),
    ("max_epoch", 1.5, "must be an integer >= 1"),
    ("init_lr", 0, "must be a positive number"),
    ("weight_decay", -0.1, "must be a number >= 0"),
    ("beta2", 1.0, "must be a number in [0, 1)"),
    ("num_workers", -1, "must be an integer >= 0"),
    ("seed", "x", "must be an integer >= 0"),
    ("amp_dtype", "fp8", "must be one of: fp16, float16, bf16, bfloat16"),
    ("device", "gpu", "must be a device name such as 'cuda', 'cuda:1' or 'cpu'"),
    ("train_splits", "train", "must be a non-empty list of names"),
    ("dist_backend", "mpi", "must be one of: nccl, gloo"),
    ("evaluate", True, "must be false: the image_text_pretrain task has no evaluation"),
]
# Names looked up in a registry (other tests may register more): (key, typo, the meant name).
REGISTRY_TYPOS = [
    ("lr_sched", "linear_warmup_cosin_lr", "linear_warmup_cosine_lr"),
    ("task", "image_text_pretrian", "image_text_pretrain"),
    ("runner", "runner_bas", "runner_base"),
]


def load(path, options=None):
    return Config(types.SimpleNamespace(cfg_path=str(path), options=options))


@pytest.fixture
def config_file(tmp_path):
    """Writes a tiny stage-2 training config with ``run`` overrides; returns its path."""

    def write(**run):
        return write_stage2_config(
            tmp_path / "s2.yaml", tmp_path / "align", tmp_path / "out", **run
        )

    return write


@pytest.mark.parametrize(("key", "value", "allowed"), LISTED + UNLISTED)
def test_bad_value_in_yaml_names_file_key_value_and_rule(config_file, key, value, allowed):
    path = config_file(**{key: value})
    with pytest.raises(ConfigError) as err:
        load(path)
    assert f"{path}: run.{key} = {value!r}: {allowed}" in str(err.value)


@pytest.mark.parametrize(("key", "value", "allowed"), LISTED + UNLISTED)
def test_bad_value_in_options_names_options_key_value_and_rule(config_file, key, value, allowed):
    with pytest.raises(ConfigError) as err:
        load(config_file(), [f"run.{key}={value}"])
    assert f"--options: run.{key} = {value!r}: {allowed}" in str(err.value)


@pytest.mark.parametrize(("key", "typo", "meant"), REGISTRY_TYPOS)
def test_unknown_registry_name_lists_the_registered_ones(config_file, key, typo, meant):
    path = config_file(**{key: typo})
    for source, options in ((path, None), ("--options", [f"run.{key}={typo}"])):
        with pytest.raises(ConfigError) as err:
            load(config_file() if options else path, options)
        head, names = str(err.value).split(": must be one of: ")
        assert head == f"{source}: run.{key} = {typo!r}"
        assert names.endswith(f". Did you mean '{meant}'?") and meant in names.split(". ")[0]


def test_every_bad_value_is_reported_at_once(config_file):
    with pytest.raises(ConfigError) as err:
        load(config_file(log_freq=0), ["run.init_lr=abc"])
    lines = str(err.value).splitlines()
    assert len(lines) == 2
    assert any(line.startswith("--options: run.init_lr = 'abc'") for line in lines)
    assert any(line.endswith("run.log_freq = 0: must be an integer >= 1") for line in lines)


@pytest.mark.parametrize("key", ["valid_splits", "test_splits", "use_dist_eval_sampler"])
def test_keys_no_task_reads_are_errors(config_file, key):
    path = config_file(**{key: ["val"]})
    with pytest.raises(ConfigError, match=rf"{path}: run.{key} is not supported: .*no evaluation"):
        load(path)


def test_unknown_key_names_nearest_and_source(config_file):
    path = config_file(log_frq=5)
    with pytest.raises(ConfigError, match=rf"^{path}: unknown key 'run.log_frq'. Did you mean"):
        load(path)
    with pytest.raises(
        ConfigError, match=r"^--options: unknown key 'run.seeds'. Did you mean 'seed'"
    ):
        load(config_file(), ["run.seeds=3"])


def test_values_are_typed(config_file, monkeypatch):
    monkeypatch.setenv("RUNCFG_SEED", "7")  # environment variables arrive as text
    cfg = load(config_file(seed="${oc.env:RUNCFG_SEED}", amp="False", init_lr=1))
    run = cfg.run_config
    assert (run.seed, run.amp, run.init_lr) == (7, False, 1.0)
    assert isinstance(run.init_lr, float) and run.train_splits == ("train",)
    assert cfg.run_cfg.seed == "7"  # the node (the original's API, the logged block) is untouched


def test_null_means_the_default(config_file):
    run = load(config_file(log_freq=None), ["run.iters_per_epoch=null"]).run_config
    assert run.log_freq == RunConfig.log_freq and run.iters_per_epoch is None


def test_defaults_are_what_absent_keys_did():
    """Before RunConfig these were literals at each reader; a changed default changes runs."""
    run = RunConfig.from_node(OmegaConf.create({}))
    assert (run.runner, run.evaluate, run.amp, run.amp_dtype) == (
        "runner_base",
        False,
        False,
        "fp16",
    )
    assert (run.warmup_lr, run.warmup_steps, run.lr_decay_rate, run.beta2) == (-1, 0, None, 0.999)
    assert (run.iters_per_epoch, run.accum_grad_iters, run.log_freq) == (None, 1, 50)
    assert (run.num_workers, run.save_freq_iters, run.resume_ckpt_path) == (0, 0, None)
    assert (run.device, run.gpu, run.distributed, run.wandb_log) == ("cuda", 0, False, False)


def test_every_default_obeys_its_own_rule():
    hints = typing.get_type_hints(RunConfig)
    for spec in dataclasses.fields(RunConfig):
        if spec.default is not None and not rule_of(spec).required:
            assert parse_value(spec.default, hints[spec.name], rule_of(spec)) == spec.default


def test_training_needs_its_keys_but_a_demo_config_does_not(config_file, tmp_path):
    path = tmp_path / "demo.yaml"
    text = config_file().read_text()
    path.write_text(text.split("run:")[0] + "run:\n  task: image_text_pretrain\n")
    cfg = load(path)  # demo.py and evaluation need no optimiser settings
    assert cfg.run_config.init_lr is None
    with pytest.raises(ConfigError) as err:
        cfg.training_run_config()
    message = str(err.value)
    assert (
        f"{path}: run.init_lr is not set; training needs it (must be a positive number)" in message
    )
    for key in ("lr_sched", "min_lr", "weight_decay", "max_epoch", "seed", "output_dir"):
        assert f"run.{key} is not set" in message


@pytest.mark.parametrize("cfg_path", SHIPPED)
def test_shipped_configs_build(cfg_path, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load(cfg_path)
    assert cfg.run_config.task == "image_text_pretrain"
    if cfg_path.startswith("train_configs/"):
        assert cfg.training_run_config().max_epoch >= 1


def test_saved_resolved_config_loads_again(config_file, tmp_path):
    """config.yaml in the run folder holds what init_distributed_mode wrote at start-up."""
    cfg = load(config_file())
    run = cfg.run_cfg
    run.rank, run.world_size, run.gpu, run.distributed, run.dist_backend = 1, 2, 1, True, "gloo"
    saved = tmp_path / "config.yaml"
    saved.write_text(OmegaConf.to_yaml(OmegaConf.create(cfg.to_dict())))
    again = load(saved).training_run_config()
    assert (again.rank, again.world_size, again.gpu, again.dist_backend) == (1, 2, 1, "gloo")


def test_init_distributed_mode_leaves_a_valid_run_node(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    node = OmegaConf.create({"distributed": True, "device": "cpu"})
    dist_utils.init_distributed_mode(node)
    assert RunConfig.from_node(node).distributed is False


def test_train_main_fails_before_the_model(config_file, caplog):
    with pytest.raises(ConfigError, match=r"--options: run.max_epoch = 0: must be an integer"):
        train.main(["--cfg-path", str(config_file()), "--options", "run.max_epoch=0"])
    assert "Loading VIT" not in caplog.text


def test_train_py_prints_the_error_and_exits_non_zero(config_file, tmp_path):
    write_align_folder(tmp_path / "align", n=2)  # everything else would work
    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--cfg-path",
            str(config_file()),
            "--options",
            "run.init_lr=abc",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "--options: run.init_lr = 'abc': must be a positive number" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Loading VIT" not in result.stdout + result.stderr
