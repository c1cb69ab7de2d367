"""Serve a MiniGPT-4 model over the OpenAI chat-completions API (``python -m minigpt4.serve``).

:func:`~minigpt4.serve.app.create_app` builds the FastAPI app over a Chat; ``demo.py --api``
mounts the web demo next to it, so one loaded model serves people and programs.
"""

from minigpt4.serve.app import create_app
from minigpt4.serve.server import model_name, run

__all__ = ["create_app", "model_name", "run"]
