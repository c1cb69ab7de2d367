"""Keep only the trained weights of a runner checkpoint, in the layout of the released ones.

    python -m tiny_world.export_ckpt output/.../checkpoint_0.pth \\
        tiny_world/checkpoint/pretrained_minigpt4_tiny.pth

Runner checkpoints also hold the optimizer, the config and buffers; the released
``pretrained_minigpt4*.pth`` files hold ``{"model": {"llama_proj.weight", "llama_proj.bias"}}``,
MiniGPT-v2's ``minigptv2_checkpoint.pth`` also the LoRA weights in peft 0.2.0's names
(``...q_proj.lora_A.weight``), which a checkpoint with LoRA keeps here too.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from minigpt4.models import lora
from minigpt4.models.weights import load_state_dict_file, minigpt4_state, save_weights

logger = logging.getLogger(__name__)


def export(src: str | Path, dst: str | Path) -> dict[str, torch.Tensor]:
    """Write ``{"model": {llama_proj.*, LoRA weights if any}}`` (fp32) from checkpoint ``src``
    to ``dst``."""
    state = load_state_dict_file(str(src), "checkpoint")
    content = minigpt4_state(state, where=str(src))
    adapters = lora.to_original_names({k: state[k] for k in lora.lora_keys(state)})
    content["model"].update({k: v.detach().float().contiguous() for k, v in adapters.items()})
    save_weights(content, str(dst))
    return content["model"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("src", help="runner checkpoint (checkpoint_{epoch}.pth)")
    parser.add_argument("dst", help="output file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    export(args.src, args.dst)
    logger.info("llama_proj (and LoRA, if any) of %s written to %s", args.src, args.dst)


if __name__ == "__main__":
    main()
