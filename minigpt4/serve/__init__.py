"""Serve a MiniGPT-4 model over the OpenAI chat-completions API (``python -m minigpt4.serve``).

:func:`~minigpt4.serve.app.create_app` builds the FastAPI app over a Chat; ``demo.py --api``
mounts the web demo next to it, so one loaded model serves people and programs. The names below
are imported when first used, so that ``python -m minigpt4.serve --help`` answers without torch.
"""

from typing import Any

__all__ = ["create_app", "model_name", "run"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from minigpt4.serve.app import create_app

        return create_app
    if name in ("model_name", "run"):
        from minigpt4.serve import server

        return getattr(server, name)
    raise AttributeError(f"module 'minigpt4.serve' has no attribute {name!r}")
