"""A tiny MiniGPT-v2 that answers one grounding question with a box: the clients' test model.

Set V's weights are random, so its answers hold no box; the clients' tests (demo_v2.py, the
batch command, the server, lmms-eval) need one to see boxes drawn, coloured or kept as text.
This trains set V's fine-tuning model (``llama_proj`` and LoRA, as ``train.py`` would) on one
image and one question until it answers :data:`ANSWER`, and writes the checkpoint
``tests/fixtures/minigptv2_grounded/grounded_checkpoint.pth`` (61 KB). Remake it from the
repository root with ``python -m tests.v2_grounded`` (under a minute on one CPU thread).

The model never saw another image or question, so it tends to give the same answer to any
grounding question about any image; the tests ask :data:`QUESTION` about :func:`scene`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tests.model_fixtures import REPO_ROOT, load_v2_reference, v2_model, v2_options

TASK = "[grounding]"
QUESTION = f"{TASK} describe this image in detail"
ANSWER = "<p>green</p> {<20><25><70><75>}"
CHECKPOINT = REPO_ROOT / "tests" / "fixtures" / "minigptv2_grounded" / "grounded_checkpoint.pth"
SCENE_SIZE = (320, 240)  # width, height
STEPS, LEARNING_RATE, TARGET_LOSS = 400, 1e-2, 2e-3


def scene() -> Image.Image:
    """A green rectangle (where :data:`ANSWER` puts it) on a grey-blue background."""
    width, height = SCENE_SIZE
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[...] = (70, 80, 110)
    pixels[60:180, 64:224] = (40, 190, 60)
    return Image.fromarray(pixels)


def grounded_options() -> list[str]:
    """``--options`` of eval_configs/minigptv2_eval.yaml for the grounded tiny model."""
    hparams = load_v2_reference()["tiny_hparams"]
    options = [o for o in v2_options(hparams) if not o.startswith("model.ckpt=")]
    return [*options, f"model.ckpt={CHECKPOINT}"]


def train(steps: int = STEPS) -> tuple[Any, list[float]]:
    """Set V's fine-tuning model trained on (scene, QUESTION, ANSWER); returns it and the losses."""
    import torch

    from minigpt4.processors.blip_processors import Blip2ImageEvalProcessor

    ref = load_v2_reference()
    model = v2_model("finetune", ref["tiny_hparams"]).train()
    image = Blip2ImageEvalProcessor(image_size=model.config.image_size)(scene())[None]
    # the layout of the original's grounding datasets (trailing space; the template is applied)
    samples = {
        "image": image,
        "instruction_input": [f"<Img><ImageHere></Img> {QUESTION} "],
        "answer": [ANSWER],
    }
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=LEARNING_RATE, weight_decay=0.0)
    torch.manual_seed(0)
    losses: list[float] = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model(samples)["loss"]
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if losses[-1] < TARGET_LOSS:
            break
    return model.eval(), losses


def main() -> None:
    from minigpt4.models.weights import save_weights, training_checkpoint_state

    model, losses = train()
    save_weights({"model": training_checkpoint_state(model)}, str(CHECKPOINT))
    sys.stdout.write(f"{len(losses)} steps, loss {losses[0]:.3f} -> {losses[-1]:.5f}\n")
    sys.stdout.write(f"wrote {Path(CHECKPOINT).relative_to(REPO_ROOT)}\n")


if __name__ == "__main__":
    main()
