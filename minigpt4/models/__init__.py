"""Models: ``mini_gpt4`` (MiniGPT-4 v1, Vicuna), ``minigpt4`` (MiniGPT-4 LLaMA-2 Chat) and
``minigpt_v2`` (MiniGPT-v2). The classes are imported when first asked for (``from
minigpt4.models import *`` included), so that importing a light module of this package (the
training-memory command's ``--help``) does not import torch; the registry imports them on its
first lookup (:data:`minigpt4.common.registry.REGISTERING_MODULES`)."""

import importlib

_MODULES = {
    "MiniGPT4": "minigpt4.models.mini_gpt4",
    "MiniGPT4Llama2": "minigpt4.models.minigpt4_llama2",
    "MiniGPTv2": "minigpt4.models.minigpt_v2",
}
__all__ = list(_MODULES)


def __getattr__(name: str):
    if name in _MODULES:
        return getattr(importlib.import_module(_MODULES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
