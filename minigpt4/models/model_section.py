"""A ``model`` section completed from its architecture's default YAML.

The original's ``Config`` merges the user's ``model`` section over the default YAML of its
``arch`` and ``model_type`` (``minigpt4/configs/models/...``) before ``from_config`` sees it. Code
outside the project often skips ``Config``: VLMEvalKit reads an eval YAML with ``OmegaConf.load``
and hands ``cfg.model`` to ``registry.get_model_class(arch).from_config``. ``from_config``
therefore completes the section itself (merging again is harmless: the user's keys win), and a
``model_type`` the arch does not know (VLMEvalKit's ``pretrain_vicuna_7b``) falls back to the
arch's default for that section, which is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

logger = logging.getLogger(__name__)


def as_dict(cfg: Mapping | DictConfig) -> dict[str, Any]:
    """A plain dict of a model section (interpolations resolved)."""
    if isinstance(cfg, DictConfig):
        return dict(OmegaConf.to_container(cfg, resolve=True))
    if not isinstance(cfg, Mapping):
        raise TypeError(f"a model section is a mapping of keys, not {type(cfg).__name__}")
    return dict(cfg)


def complete_section(model_cls: Any, cfg: Mapping | DictConfig) -> dict[str, Any]:
    """``cfg`` over the default YAML of its model type; an unknown or missing ``model_type`` is
    replaced by ``model_cls.default_model_type(section)``."""
    values = as_dict(cfg)
    known = model_cls.PRETRAINED_MODEL_CONFIG_DICT
    model_type = values.get("model_type")
    if model_type not in known:
        chosen = model_cls.default_model_type(values)
        if model_type is not None:
            logger.warning(
                "model.model_type '%s' is not a type of arch %s (known: %s); using '%s'",
                model_type,
                values.get("arch"),
                ", ".join(sorted(known)),
                chosen,
            )
        values["model_type"] = chosen
    defaults = OmegaConf.load(model_cls.default_config_path(values["model_type"])).model
    given = {key: value for key, value in values.items() if value is not None}
    return {**as_dict(defaults), **given}
