"""Dataset builders: a registry name -> a default YAML, processors and the dataset objects."""

from __future__ import annotations

import logging
import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

from minigpt4.common.registry import registry
from minigpt4.processors.base_processor import BaseProcessor

logger = logging.getLogger(__name__)


class BaseDatasetBuilder:
    """Builds the datasets of one ``datasets.<name>`` config block.

    Subclasses set ``train_dataset_cls`` and ``DATASET_CONFIG_DICT`` (config type -> YAML path
    relative to the ``minigpt4/`` package) and implement :meth:`build`.
    """

    train_dataset_cls: type | None = None
    eval_dataset_cls: type | None = None
    DATASET_CONFIG_DICT: dict[str, str] = {}

    def __init__(self, cfg: DictConfig | str | None = None, name: str | None = None) -> None:
        if cfg is None:
            cfg = self.default_config()
        elif isinstance(cfg, str):
            cfg = self._load_block(cfg)
        self.config = cfg
        self.name = name or self.registered_name()
        self.data_type = cfg.get("data_type", "images")
        self.vis_processors: dict[str, Any] = {"train": BaseProcessor(), "eval": BaseProcessor()}
        self.text_processors: dict[str, Any] = {"train": BaseProcessor(), "eval": BaseProcessor()}

    @classmethod
    def registered_name(cls) -> str:
        for name, builder in registry.mapping["builder_name_mapping"].items():
            if builder is cls:
                return name
        return cls.__name__

    @classmethod
    def default_config_path(cls, type: str = "default") -> str:  # the original's argument name
        """Absolute path of the default YAML for config ``type``."""
        if type not in cls.DATASET_CONFIG_DICT:
            raise KeyError(
                f"dataset builder {cls.__name__} has no config type '{type}'; "
                f"known types: {', '.join(sorted(cls.DATASET_CONFIG_DICT))}"
            )
        return os.path.join(registry.get_path("library_root"), cls.DATASET_CONFIG_DICT[type])

    @classmethod
    def _load_block(cls, path: str) -> DictConfig:
        datasets = OmegaConf.load(path).datasets
        return datasets[next(iter(datasets))]

    @classmethod
    def default_config(cls, type: str = "default") -> DictConfig:
        return cls._load_block(cls.default_config_path(type))

    def build_datasets(self) -> dict[str, Any]:
        """``{"train": dataset}``: check the data, build the processors and the dataset."""
        logger.info("Building datasets...")
        self.build_processors()
        return self.build()

    def build(self) -> dict[str, Any]:
        raise NotImplementedError

    def build_processors(self) -> None:
        vis_proc_cfg = self.config.get("vis_processor")
        txt_proc_cfg = self.config.get("text_processor")
        if vis_proc_cfg is not None:
            self.vis_processors["train"] = self._build_proc_from_cfg(vis_proc_cfg.get("train"))
            self.vis_processors["eval"] = self._build_proc_from_cfg(vis_proc_cfg.get("eval"))
        if txt_proc_cfg is not None:
            self.text_processors["train"] = self._build_proc_from_cfg(txt_proc_cfg.get("train"))
            self.text_processors["eval"] = self._build_proc_from_cfg(txt_proc_cfg.get("eval"))

    @staticmethod
    def _build_proc_from_cfg(cfg: DictConfig | None) -> BaseProcessor | None:
        if cfg is None:
            return None
        return registry.get_processor_class(cfg.name).from_config(cfg)

    def storage_hint(self) -> str:
        """How a user points this dataset at its data (for error messages)."""
        return (
            f"Set datasets.{self.name}.build_info.storage in your config, pass "
            f"--options datasets.{self.name}.build_info.storage=PATH, or edit "
            f"{self.default_config_path()}"
        )
