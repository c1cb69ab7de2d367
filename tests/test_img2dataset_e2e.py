"""The guide's whole stage-1 data path, on loopback.

synthetic captions + images (make_synthetic.py --format urls) served by ``python -m http.server``
-> convert_laion.py (copied into the data folder and run without arguments, as the guide does)
-> download_laion.sh (img2dataset, from .venv-img2dataset) -> webdataset shards
-> the ``laion`` builder -> training batches whose images match their captions.
A few listed URLs answer 404: they must show in ``_stats.json`` and not reach the batches.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from omegaconf import OmegaConf

from minigpt4.common.registry import registry
from tiny_world.world import BACKGROUND_RGB, COLOUR_RGB, parse_answer

REPO_ROOT = Path(__file__).resolve().parents[1]
IMG2DATASET = REPO_ROOT / ".venv-img2dataset" / "bin" / "img2dataset"
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])

COUNT, MISSING, SHARD_SIZE = 24, 3, 10
SERVED_SIZE, STORED_SIZE = 96, 64

pytestmark = pytest.mark.skipif(
    not IMG2DATASET.exists(),
    reason="img2dataset is not installed in .venv-img2dataset "
    "(run: bash dataset/setup_img2dataset.sh)",
)


@pytest.fixture
def http_server(tmp_path):
    """A ``python -m http.server`` on a free loopback port serving ``tmp_path/served``."""
    served = tmp_path / "served"
    served.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1"],
        cwd=served,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        # "Serving HTTP on 127.0.0.1 port 43217 (http://127.0.0.1:43217/) ..."
        first = lines.get(timeout=20)
        port = int(first.split(" port ")[1].split()[0])
        yield served, f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _run(cmd, cwd, env=None, timeout=300):
    out = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def _shape_colour(image: torch.Tensor) -> str:
    """The named colour most pixels of the shape are nearest to (edge pixels blend: majority)."""
    rgb = (image.permute(1, 2, 0).numpy() * CLIP_STD + CLIP_MEAN) * 255.0
    corners = np.stack([rgb[0, 0], rgb[0, -1], rgb[-1, 0], rgb[-1, -1]]).mean(axis=0)
    background = min(BACKGROUND_RGB.values(), key=lambda c: np.abs(corners - c).sum())
    mask = np.abs(rgb - np.array(background)).sum(axis=2) > 120
    assert mask.sum() > 10, "no shape found in the image"
    names = list(COLOUR_RGB)
    palette = np.array([COLOUR_RGB[n] for n in names], dtype=np.float64)
    nearest = np.abs(rgb[mask][:, None, :] - palette[None]).sum(axis=2).argmin(axis=1)
    return names[np.bincount(nearest, minlength=len(names)).argmax()]


@pytest.mark.slow
def test_served_captions_download_into_shards_that_train(http_server, tmp_path):
    served, base_url = http_server
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    # 1. The synthetic "BLIP caption JSON" and its images, behind the web server.
    _run(
        [
            sys.executable,
            str(REPO_ROOT / "dataset" / "make_synthetic.py"),
            "--seed=11",
            f"--count={COUNT}",
            "--format=urls",
            f"--out={served}",
            f"--base-url={base_url}",
            f"--image-size={SERVED_SIZE}",
            f"--missing={MISSING}",
        ],
        cwd=tmp_path,
        env=env,
    )
    records = json.loads((served / "captions.json").read_text())
    assert len(records) == COUNT + MISSING

    # 2. The guide's layout: JSON, converter and download script together in the data folder.
    data = tmp_path / "laion"
    data.mkdir()
    shutil.copy(served / "captions.json", data / "laion_synthetic_filtered_large.json")
    shutil.copy(REPO_ROOT / "dataset" / "convert_laion.py", data)  # follows the symlink
    shutil.copy(REPO_ROOT / "dataset" / "download_laion.sh", data)
    assert not (data / "convert_laion.py").is_symlink()
    _run([sys.executable, "convert_laion.py"], cwd=data)
    tsv_lines = (data / "laion_synthetic_filtered_large.tsv").read_text().splitlines()
    assert tsv_lines[0] == "url\tcaption" and len(tsv_lines) == 1 + COUNT + MISSING

    # 3. Download (small: 1 process, 4 threads, shards of 10, stored at 64 px).
    env_dl = {**os.environ, "IMG2DATASET": str(IMG2DATASET)}
    env_dl.pop("WANDB_MODE", None)  # the script must turn wandb off by itself
    out = _run(
        [
            "sh",
            "download_laion.sh",
            "--processes",
            "1",
            "--threads",
            "4",
            "--image_size",
            str(STORED_SIZE),
            "--",
            "--number_sample_per_shard",
            str(SHARD_SIZE),
        ],
        cwd=data,
        env=env_dl,
    )
    assert "wandb False" in out.stdout
    shards = data / "laion_dataset"
    n_shards = -(-(COUNT + MISSING) // SHARD_SIZE)
    assert sorted(p.name for p in shards.glob("*.tar")) == [f"{i:05d}.tar" for i in range(n_shards)]

    # 4. The 404s are reported in _stats.json and the parquet, and absent from the tars.
    stats = [json.loads((shards / f"{i:05d}_stats.json").read_text()) for i in range(n_shards)]
    assert sum(s["count"] for s in stats) == COUNT + MISSING
    assert sum(s["successes"] for s in stats) == COUNT
    assert sum(s["failed_to_download"] for s in stats) == MISSING
    not_found = sum(n for s in stats for reason, n in s["status_dict"].items() if "404" in reason)
    assert not_found == MISSING
    table = pq.read_table([str(shards / f"{i:05d}.parquet") for i in range(n_shards)])
    failed_urls = {row["url"] for row in table.to_pylist() if row["status"] == "failed_to_download"}
    missing_urls = {r["url"] for r in records if not (served / r["url"][len(base_url) :]).exists()}
    assert failed_urls == missing_urls and len(missing_urls) == MISSING

    caption_of = {r["url"]: r["caption"] for r in records}
    in_tars = {}
    for tar_path in sorted(shards.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(member).read())
                    assert meta["status"] == "success"
                    assert meta["caption"] == caption_of[meta["url"]]
                    assert (meta["width"], meta["original_width"]) == (STORED_SIZE, SERVED_SIZE)
                    in_tars[meta["url"]] = meta["caption"]
    assert len(in_tars) == COUNT and not set(in_tars) & missing_urls

    # 5. The laion builder reads the shards (brace pattern over all of them) into batches.
    inspect = _run(
        [sys.executable, str(REPO_ROOT / "dataset" / "inspect_shards.py"), str(shards)],
        cwd=tmp_path,
    )
    pattern = str(shards / f"{{00000..{n_shards - 1:05d}}}.tar")
    assert pattern in inspect.stdout and "HTTP Error 404" in inspect.stdout

    cfg = OmegaConf.create(
        {
            "data_type": "images",
            "build_info": {"storage": pattern},
            # eval resize keeps the whole image, so the shape is always in view
            "vis_processor": {"train": {"name": "blip2_image_eval", "image_size": STORED_SIZE}},
            "text_processor": {"train": {"name": "blip_caption"}},
        }
    )
    builder = registry.get_builder_class("laion")(cfg)
    dataset = builder.build_datasets()["train"]
    loader = torch.utils.data.DataLoader(dataset, batch_size=6, num_workers=0)
    captions = set(in_tars.values())
    seen = 0
    for batch, _ in zip(loader, range(3)):
        assert batch["image"].shape == (6, 3, STORED_SIZE, STORED_SIZE)
        assert len(batch["text_input"]) == 6
        for image, text in zip(batch["image"], batch["text_input"]):
            assert text in captions  # already lower case without punctuation: blip_caption keeps it
            assert _shape_colour(image) == parse_answer(text)["colour"], text
            seen += 1
    assert seen == 18
