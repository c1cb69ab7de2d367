"""lmms-eval's entry point for this package (pyproject.toml, group "lmms_eval.models").

lmms-eval loads ``manifest`` when its model registry starts and then imports the model class
only when ``--model minigpt4`` is asked for.
"""

from __future__ import annotations

from typing import Any

MODEL_ID = "minigpt4"
MODEL_CLASS = "minigpt4.evaluation.lmms_eval_model.MiniGPT4"


def manifest() -> Any:
    """The ``ModelManifest`` registering ``--model minigpt4`` (a simple, non-chat model)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=MODEL_CLASS)
