"""Generated training data and configs for the training tests (tiny reference model).

Shards are written the way img2dataset writes them (``{key}.jpg``, ``{key}.json`` with
``"caption"``, ``"url"``, ``"key"``, ``"status"``..., ``{key}.txt``); the stage-2 folder is the
``cc_sbu_align`` layout (``filter_cap.json`` + ``image/{image_id}.jpg``).
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import webdataset as wds
from omegaconf import OmegaConf
from PIL import Image

from tests.model_fixtures import tiny_model_config

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220)}
SHAPES = ("square", "stripe", "dot")
IMAGE_SIZE = (48, 40)  # small on disk; the processors resize to 224


def make_image(colour: str, shape: str, rng: random.Random) -> Image.Image:
    """A small picture of a coloured shape on a grey background."""
    img = Image.new("RGB", IMAGE_SIZE, (128, 128, 128))
    w, h = IMAGE_SIZE
    x0, y0 = rng.randrange(0, w // 2), rng.randrange(0, h // 2)
    box = {"square": (x0, y0, x0 + 16, y0 + 16), "stripe": (0, y0, w, y0 + 6)}.get(
        shape, (x0, y0, x0 + 5, y0 + 5)
    )
    img.paste(COLOURS[colour], box)
    return img


def jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_shards(
    folder: Path,
    n_shards: int,
    per_shard: int,
    seed: int = 0,
    corrupt: tuple[tuple[int, int], ...] = (),
) -> str:
    """Write ``{00000..N-1}.tar`` shards; ``corrupt`` = (shard, sample) pairs with a bad jpg.

    Returns the brace pattern for ``build_info.storage``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for s in range(n_shards):
        with wds.TarWriter(str(folder / f"{s:05d}.tar")) as sink:
            for j in range(per_shard):
                key = f"{s:05d}{j:04d}"
                colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
                caption = f"A {colour.upper()} {shape}: on grey!"
                jpg = jpeg_bytes(make_image(colour, shape, rng))
                if (s, j) in corrupt:
                    jpg = b"\xff\xd8 not really a jpeg"
                meta = {
                    "url": f"http://example.invalid/{key}.jpg",
                    "caption": caption,
                    "key": key,
                    "status": "success",
                    "error_message": None,
                    "width": IMAGE_SIZE[0],
                    "height": IMAGE_SIZE[1],
                }
                sink.write({"__key__": key, "jpg": jpg, "json": meta, "txt": caption})
    return str(folder / f"{{00000..{n_shards - 1:05d}}}.tar")


def write_align_folder(folder: Path, n: int, seed: int = 0) -> Path:
    """A ``cc_sbu_align`` folder with ``n`` images and raw captions."""
    (folder / "image").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    annotations = []
    for i in range(n):
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        image_id = str(i + 2)  # the real folder starts at 2.jpg
        make_image(colour, shape, rng).save(folder / "image" / f"{image_id}.jpg", quality=90)
        caption = f"The image shows a {colour} {shape} on a grey background."
        annotations.append({"image_id": image_id, "caption": caption})
    (folder / "filter_cap.json").write_text(json.dumps({"annotations": annotations}))
    return folder


def run_section(output_dir: Path, **overrides: Any) -> dict[str, Any]:
    """A short CPU ``run`` section: 2 epochs of 3 iterations, batch 2, no workers."""
    run = {
        "task": "image_text_pretrain",
        "lr_sched": "linear_warmup_cosine_lr",
        "init_lr": 1e-2,
        "min_lr": 1e-3,
        "warmup_lr": 1e-4,
        "weight_decay": 0.05,
        "max_epoch": 2,
        "batch_size_train": 2,
        "batch_size_eval": 2,
        "num_workers": 0,
        "warmup_steps": 2,
        "iters_per_epoch": 3,
        "seed": 42,
        "output_dir": str(output_dir),
        "amp": False,
        "resume_ckpt_path": None,
        "evaluate": False,
        "train_splits": ["train"],
        "device": "cpu",
        "world_size": 1,
        "dist_url": "env://",
        "distributed": True,
        "log_freq": 1,
    }
    run.update(overrides)
    return run


def processors(with_ratio: float | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {
        "vis_processor": {"train": {"name": "blip2_image_train", "image_size": 224}},
        "text_processor": {"train": {"name": "blip_caption"}},
    }
    if with_ratio is not None:
        block["sample_ratio"] = with_ratio
    return block


def write_stage1_config(path: Path, laion: str, cc_sbu: str, output_dir: Path, **run: Any) -> Path:
    """Stage-1 config (two webdataset datasets with sample ratios) for the tiny model."""
    cfg = {
        "model": OmegaConf.to_container(tiny_model_config(stage=1, with_ckpt=False)),
        "datasets": {
            "laion": {**processors(115), "build_info": {"storage": laion}},
            "cc_sbu": {**processors(14), "build_info": {"storage": cc_sbu}},
        },
        "run": run_section(output_dir, **run),
    }
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    return path


def write_stage2_config(
    path: Path, align_dir: Path, output_dir: Path, ckpt: str | None = None, **run: Any
) -> Path:
    """Stage-2 config (cc_sbu_align, prompts, end_sym ###) for the tiny model."""
    model = OmegaConf.to_container(tiny_model_config(stage=2, with_ckpt=False))
    if ckpt is not None:
        model["ckpt"] = ckpt
    cfg = {
        "model": model,
        "datasets": {"cc_sbu_align": {**processors(), "build_info": {"storage": str(align_dir)}}},
        "run": run_section(output_dir, **run),
    }
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    return path
