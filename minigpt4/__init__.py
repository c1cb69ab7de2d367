"""MiniGPT-4: a frozen EVA ViT-g + Q-Former and a frozen LLaMA joined by one trainable layer.

``minigpt4.load_chat(cfg_path)`` is a ready chat in one call. Importing the package is light (no
torch: a command's ``--help`` answers at once): it registers the two paths config files are
resolved against, and the registry imports every module that registers a model, builder,
processor, task, runner or lr scheduler on its first lookup (see
:data:`minigpt4.common.registry.REGISTERING_MODULES`). ``from minigpt4.models import *`` and the
other imports the original's scripts begin with still register at once.
(``configs/default.yaml`` is the original's file; nothing reads its ``env.cache_root``.)
"""

import os
from typing import Any

from minigpt4.common.registry import registry

library_root = os.path.dirname(os.path.abspath(__file__))
repo_root = os.path.dirname(library_root)

registry.register_path("library_root", library_root)
registry.register_path("repo_root", repo_root)

__all__ = ["load_chat"]


def __getattr__(name: str) -> Any:
    """``load_chat`` (:func:`minigpt4.conversation.loading.load_chat`), imported when used."""
    if name == "load_chat":
        from minigpt4.conversation.loading import load_chat

        return load_chat
    raise AttributeError(f"module 'minigpt4' has no attribute {name!r}")
