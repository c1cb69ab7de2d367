"""Keep only ``llama_proj`` of a runner checkpoint, in the layout of the released checkpoints.

    python -m minigpt4.tiny_world.export_ckpt output/.../checkpoint_0.pth \\
        minigpt4/tiny_world/checkpoint/pretrained_minigpt4_tiny.pth

Runner checkpoints also hold the optimizer, the config and buffers; the released
``pretrained_minigpt4*.pth`` files hold ``{"model": {"llama_proj.weight", "llama_proj.bias"}}``.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

KEYS = ("llama_proj.weight", "llama_proj.bias")


def export(src: str | Path, dst: str | Path) -> dict[str, torch.Tensor]:
    """Write ``{"model": {llama_proj.*}}`` (fp32, contiguous) from checkpoint ``src`` to ``dst``."""
    state = torch.load(src, map_location="cpu", weights_only=False)
    model = state.get("model") if isinstance(state, dict) else None
    if not isinstance(model, dict) or any(k not in model for k in KEYS):
        raise ValueError(f"{src}: not a MiniGPT-4 checkpoint with 'model' -> {', '.join(KEYS)}")
    out = {k: model[k].detach().float().contiguous().clone() for k in KEYS}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    torch.save({"model": out}, tmp)
    os.replace(tmp, dst)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("src", help="runner checkpoint (checkpoint_{epoch}.pth)")
    parser.add_argument("dst", help="output file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    export(args.src, args.dst)
    logger.info("llama_proj of %s written to %s", args.src, args.dst)


if __name__ == "__main__":
    main()
