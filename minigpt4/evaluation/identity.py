"""What produced a run's answers, by content: the resolved model config and a hash of every
weight file, so a resumed evaluation never mixes two models' answers.

Paths say nothing about content: a checkpoint replaced at the same path (a newer epoch copied
over, a symlink moved) used to be resumed as the same run. The identity hashes each weight file
the model config names (ViT, Q-Former, LLM folder, ``model.ckpt``, prompts) and keeps the model
config without those paths; moving the files elsewhere keeps the identity, changing one breaks
it. Hashing reads every byte once (about a second per GB).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

CHUNK = 8 * 2**20
# Keys whose values are where files are; their content is hashed instead.
PATH_KEYS = (
    "vit_model_path",
    "q_former_model",
    "llama_model",
    "ckpt",
    "prompt_path",
    "tokenizer_path",
    "device",
    "device_8bit",
)


def file_digest(path: Path, digest: Any) -> None:
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)


def content_hash(path: str) -> str:
    """blake2b of a file, or of a folder's files (names and contents, in sorted order)."""
    digest = hashlib.blake2b(digest_size=16)
    root = Path(path)
    if root.is_dir():
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            digest.update(os.fsencode(file.relative_to(root)) + b"\0")
            file_digest(file, digest)
    else:
        file_digest(root, digest)
    return digest.hexdigest()


def model_identity(model_cfg: Any) -> dict[str, Any]:
    """``{"config": model config without paths, "weights": {config key: content hash}}``."""
    from minigpt4.common.registry import registry
    from minigpt4.models.loading.sources import config_sources
    from minigpt4.models.model_config import MiniGPT4Config
    from minigpt4.models.model_section import complete_section

    model_cls = registry.get_model_class(model_cfg.arch)
    section = complete_section(model_cls, model_cfg)
    config = MiniGPT4Config.from_cfg(section, **model_cls.CONFIG_DEFAULTS)
    weights = {
        source.config_key: content_hash(source.path)
        for source in config_sources(config)
        if os.path.exists(source.path)
    }
    plain = OmegaConf.to_container(OmegaConf.create(section), resolve=True)
    return {"config": {k: v for k, v in plain.items() if k not in PATH_KEYS}, "weights": weights}
