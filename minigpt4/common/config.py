"""The YAML configuration system.

A user's file (``train_configs/...``, ``eval_configs/...``) has the sections ``model``,
``datasets`` and ``run``. It is merged, as in the original, over

1. the model's default YAML, chosen by ``model.arch`` and ``model.model_type``
   (``minigpt4/configs/models/minigpt4.yaml``, which also brings the ``preprocess`` section),
2. each dataset builder's default YAML (``minigpt4/configs/datasets/...``, by ``type``),

and finally ``--options key=value ...`` override anything. OmegaConf interpolations such as
``${oc.env:MINIGPT4_DATASET}`` are resolved once, here, so a missing variable is reported before
anything heavy starts. Unknown sections, misspelt ``run`` keys and unknown keys anywhere in a
``datasets.<name>`` block are errors naming the nearest valid key: a typo must not fall back to
a default silently. Every ``run`` value is checked against its declaration in
:class:`~minigpt4.common.run_config.RunConfig` here too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from minigpt4.common.config_error import ConfigError, nearest
from minigpt4.common.registry import registry
from minigpt4.common.run_config import RunConfig
from minigpt4.common.utils import resolve_path

logger = logging.getLogger(__name__)

TOP_LEVEL_SECTIONS = ("model", "datasets", "run", "preprocess", "evaluation_datasets")
# ``evaluation_datasets.<benchmark>``: what the original's MiniGPT-v2 eval scripts read
# (eval_configs/minigptv2_benchmark_evaluation.yaml); kept and readable, not used for training.
EVALUATION_DATASET_KEYS = dict.fromkeys(
    ("eval_file_path", "img_path", "max_new_tokens", "batch_size")
)

# Every key a ``datasets.<name>`` block may hold (nested: a dict is the schema of a sub-block,
# None a value). ``batch_size`` is the per-dataset batch size of the original's later configs.
PROCESSOR_KEYS = dict.fromkeys(
    (
        "name",
        "image_size",
        "min_scale",
        "max_scale",
        "random_crop",
        "mean",
        "std",
        "prompt",
        "max_words",
    )
)
PROCESSOR_BLOCK = {"train": PROCESSOR_KEYS, "eval": PROCESSOR_KEYS}
DATASET_KEYS: dict[str, Any] = {
    "data_type": None,
    # storage: MiniGPT-4's sets; the rest: MiniGPT-v2's (minigpt4/datasets/builders/v2_builders.py).
    "build_info": {
        "storage": None,
        "image_path": None,
        "ann_path": None,
        "dataset": None,
        "splitBy": None,
        "data_dir": None,
        "annotations": {"train": {"url": None, "storage": None, "md5": None}},
        "images": {"storage": None},
    },
    "vis_processor": PROCESSOR_BLOCK,
    "text_processor": PROCESSOR_BLOCK,
    "sample_ratio": None,
    "type": None,
    "batch_size": None,
}


def _check_keys(
    block: DictConfig, schema: dict[str, Any], where: str, source: str, options: DictConfig
) -> None:
    """Every key of ``block`` is in ``schema`` (recursively), else a :class:`ConfigError`.

    The error names ``--options`` when the key came from there, else ``source`` (the file).
    """
    for key, value in block.items():
        if key not in schema:
            source = "--options" if in_options(options, f"{where}.{key}") else source
            raise ConfigError(
                f"{source}: unknown key '{where}.{key}'.{nearest(str(key), schema)} Valid keys "
                f"there: {', '.join(schema)}. Remove or correct it (unknown keys would silently "
                "fall back to defaults)."
            )
        sub = schema[key]
        if sub is None or value is None:
            continue
        if not isinstance(value, DictConfig):
            raise ConfigError(
                f"{source}: '{where}.{key}' must be a mapping with keys {', '.join(sub)}, "
                f"got {value!r}"
            )
        _check_keys(value, sub, f"{where}.{key}", source, options)


def model_keys() -> dict[str, None]:
    """Every key a ``model`` section may set (the fields of the typed model config; its nested
    ``vit_config`` / ``qformer_config`` are checked when the model is built)."""
    from minigpt4.models.model_config import MiniGPT4Config

    return dict.fromkeys(f.name for f in dataclasses.fields(MiniGPT4Config))


def in_options(options: DictConfig, key: str) -> bool:
    """Whether ``--options`` set the dotted ``key``, to any value (``null`` and unresolvable
    interpolations too: nothing is resolved)."""
    node: Any = OmegaConf.to_container(options, resolve=False)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def parse_options(options: Sequence[str] | None) -> DictConfig:
    """``--options`` as OmegaConf: ``["run.init_lr=1e-5", ...]`` or ``["run.init_lr", "1e-5"]``."""
    if not options:
        return OmegaConf.create()
    options = list(options)
    if "=" not in options[0]:
        if len(options) % 2:
            raise ConfigError(
                f"--options: expected key=value items or key value pairs, got {options}"
            )
        options = [f"{k}={v}" for k, v in zip(options[::2], options[1::2])]
    for item in options:
        key = item.split("=", 1)[0]
        if "=" not in item or not key:
            raise ConfigError(f"--options: '{item}' is not of the form key=value")
    return OmegaConf.from_dotlist(options)


def _load_yaml(path: str, what: str) -> DictConfig:
    if not os.path.isfile(path):
        raise ConfigError(f"{what} not found: {path}")
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # yaml.YAMLError and friends: say which file
        raise ConfigError(f"Cannot parse {what} {path}: {err}") from err
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{what} {path} must hold a mapping at the top level")
    return cfg


class Config:
    """The merged configuration of one run (``cfg.run_cfg``, ``cfg.model_cfg`` ...)."""

    def __init__(self, args: Any) -> None:
        self.args = args

        cfg_path = getattr(args, "cfg_path", None)
        if not cfg_path:
            raise ConfigError("No configuration file given: pass --cfg-path path/to/config.yaml")
        # Relative to the current directory, else to the repository root (like every config path).
        cfg_path = resolve_path(cfg_path)
        user_config = parse_options(getattr(args, "options", None))
        config = _load_yaml(cfg_path, "configuration file")
        self._check_sections(config, cfg_path)
        self._check_sections(user_config, "--options")

        runner_config = OmegaConf.create({"run": config.get("run", OmegaConf.create())})
        model_config = self.build_model_config(config, cfg_path)
        dataset_config = self.build_dataset_config(config)
        sections = [runner_config, model_config, dataset_config]
        if config.get("evaluation_datasets") is not None:
            sections.append({"evaluation_datasets": config.evaluation_datasets})
        self.config = OmegaConf.merge(*sections, user_config)
        self._resolve(cfg_path, user_config)
        self._cfg_path = cfg_path
        self._run_options = frozenset(user_config.get("run") or ())
        RunConfig.from_node(self.config.run, self._run_source)  # every value, before any model
        _check_keys(self.config.model, model_keys(), "model", cfg_path, user_config)
        for name in self.config.get("datasets") or {}:
            block = self.config.datasets[name]
            if block is not None:
                _check_keys(block, DATASET_KEYS, f"datasets.{name}", cfg_path, user_config)
        for name, block in self.evaluation_datasets_cfg.items():
            where = f"evaluation_datasets.{name}"
            if not isinstance(block, DictConfig):
                raise ConfigError(
                    f"{cfg_path}: '{where}' must be a mapping with keys "
                    f"{', '.join(EVALUATION_DATASET_KEYS)}, got {block!r}"
                )
            _check_keys(block, EVALUATION_DATASET_KEYS, where, cfg_path, user_config)

    # --- building ---------------------------------------------------------------------------

    @staticmethod
    def _check_sections(config: DictConfig, source: str) -> None:
        """Known section names, each a mapping of keys; the model's names are strings."""
        for key in config:
            if key not in TOP_LEVEL_SECTIONS:
                hint = nearest(key, TOP_LEVEL_SECTIONS)
                raise ConfigError(
                    f"{source}: unknown top-level section '{key}'.{hint}"
                    f" Valid sections: {', '.join(TOP_LEVEL_SECTIONS)}"
                )
            value = config[key]
            if value is not None and not isinstance(value, DictConfig):
                raise ConfigError(
                    f"{source}: '{key}' = {value!r}: a section must be a mapping of keys (for "
                    f"example {key}.KEY=VALUE with --options), not a single value"
                )
        for name in ("arch", "model_type"):
            value = OmegaConf.select(config, f"model.{name}", default=None)
            if value is not None and not isinstance(value, str):
                raise ConfigError(
                    f"{source}: model.{name} must be a name (a string such as mini_gpt4), not "
                    f"{OmegaConf.to_container(value) if isinstance(value, DictConfig) else value!r}"
                )

    @staticmethod
    def build_model_config(config: DictConfig, cfg_path: str = "config") -> DictConfig:
        model = config.get("model")
        if model is None:
            raise ConfigError(f"{cfg_path}: missing 'model' section (with at least 'arch').")
        arch = model.get("arch")
        if arch is None:
            raise ConfigError(f"{cfg_path}: missing 'model.arch' (e.g. mini_gpt4).")
        model_cls = registry.get_model_class(arch)
        model_type = model.get("model_type")
        if model_type is None:
            known = ", ".join(sorted(getattr(model_cls, "PRETRAINED_MODEL_CONFIG_DICT", {})))
            raise ConfigError(
                f"{cfg_path}: missing 'model.model_type' for arch '{arch}'. Known types: {known}"
            )
        default_path = model_cls.default_config_path(model_type=model_type)
        return OmegaConf.merge(
            OmegaConf.create(),
            _load_yaml(default_path, f"default config of model type '{model_type}'"),
            {"model": model},
        )

    @staticmethod
    def build_dataset_config(config: DictConfig) -> DictConfig:
        datasets = config.get("datasets")
        if datasets is None:
            raise ConfigError("Expecting 'datasets' as the root key for dataset configuration.")
        dataset_config = OmegaConf.create()
        for name in datasets:
            builder_cls = registry.get_builder_class(name)
            user_block = datasets[name] if datasets[name] is not None else OmegaConf.create()
            config_type = user_block.get("type", "default")
            default_path = builder_cls.default_config_path(type=config_type)
            dataset_config = OmegaConf.merge(
                dataset_config,
                _load_yaml(default_path, f"default config of dataset '{name}'"),
                {"datasets": {name: user_block}},
            )
        return dataset_config

    def _resolve(self, cfg_path: str, options: DictConfig) -> None:
        try:
            OmegaConf.resolve(self.config)
        except OmegaConfBaseException as err:
            key = getattr(err, "full_key", None) or "?"
            source = "--options" if in_options(options, key) else cfg_path
            raise ConfigError(
                f"{source}: cannot resolve '{key}': {err.msg if hasattr(err, 'msg') else err}. "
                "If it reads an environment variable (${oc.env:NAME}), export NAME or set the key "
                "with --options."
            ) from err

    def _run_source(self, key: str) -> str:
        """Where ``run.<key>`` came from: ``--options`` or the YAML file."""
        return "--options" if key in self._run_options else self._cfg_path

    # --- accessors --------------------------------------------------------------------------

    @property
    def run_cfg(self) -> DictConfig:
        return self.config.run

    @property
    def run_config(self) -> RunConfig:
        """``run`` typed and checked. Read anew each time: start-up writes rank, gpu ... to it."""
        return RunConfig.from_node(self.config.run, self._run_source)

    def training_run_config(self) -> RunConfig:
        """:attr:`run_config`, also requiring every key training needs (train.py checks it
        before the model loads)."""
        return RunConfig.from_node(self.config.run, self._run_source, training=True)

    @property
    def datasets_cfg(self) -> DictConfig:
        return self.config.datasets

    @property
    def model_cfg(self) -> DictConfig:
        return self.config.model

    @property
    def evaluation_datasets_cfg(self) -> DictConfig:
        """The ``evaluation_datasets`` section (empty when the file has none)."""
        return self.config.get("evaluation_datasets") or OmegaConf.create()

    def to_dict(self) -> dict:
        return OmegaConf.to_container(self.config, resolve=True)

    @staticmethod
    def _to_json(node: DictConfig) -> str:
        return json.dumps(OmegaConf.to_container(node, resolve=True), indent=4, sort_keys=True)

    def pretty_print(self) -> None:
        """Log the three blocks the original prints at start-up, in the same format."""
        logger.info("\n=====  Running Parameters    =====")
        logger.info(self._to_json(self.config.run))
        logger.info("\n======  Dataset Attributes  ======")
        for dataset in self.config.datasets:
            logger.info(f"\n======== {dataset} =======")
            logger.info(self._to_json(self.config.datasets[dataset]))
        logger.info("\n======  Model Attributes  ======")
        logger.info(self._to_json(self.config.model))
