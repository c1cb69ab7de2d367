"""MiniGPT-4: a frozen EVA ViT-g + Q-Former and a frozen LLaMA joined by one trainable layer.

Importing the package registers every model, builder, processor, task, runner and lr scheduler
by name (explicit imports below), and the two paths config files are resolved against.
(``configs/default.yaml`` is the original's file; nothing reads its ``env.cache_root``.)
"""

import os

from minigpt4.common.registry import registry

library_root = os.path.dirname(os.path.abspath(__file__))
repo_root = os.path.dirname(library_root)

registry.register_path("library_root", library_root)
registry.register_path("repo_root", repo_root)

# Registration happens as a side effect of these imports; keep them explicit.
import minigpt4.common.optims  # noqa: E402,F401
import minigpt4.datasets.builders  # noqa: E402,F401
import minigpt4.models  # noqa: E402,F401
import minigpt4.processors  # noqa: E402,F401
import minigpt4.runners  # noqa: E402,F401
import minigpt4.tasks  # noqa: E402,F401
from minigpt4.conversation.loading import load_chat  # noqa: E402

__all__ = ["load_chat"]
