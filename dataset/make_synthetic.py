#!/usr/bin/env python3
"""Generate the synthetic shapes world (see dataset/README_SYNTHETIC.md) in its layouts.

    python dataset/make_synthetic.py --seed S --count N --format FORMAT --out DIR
        [--shard-size K] [--image-size 224] [--base-url URL] [--missing M] [--yes-no-pairs K]
        [--styled]

FORMAT:
  webdataset  stage-1 data exactly as img2dataset writes it: DIR/{00000..}.tar with, per sample,
              {key}.jpg, {key}.txt (the caption) and {key}.json (caption, url, key, status,
              error_message, width, height, original_width, original_height, exif, sha256), plus
              DIR/{shard}.parquet and DIR/{shard}_stats.json. Short BLIP-style captions.
  align       stage-2 data as the cc_sbu_align folder: DIR/filter_cap.json
              ({"annotations": [{"image_id": "0", "caption": ...}, ...]}) + DIR/image/{id}.jpg,
              with long, instruction-style descriptions; --yes-no-pairs K adds K pairs of
              yes/no questions per image, records with an "instruction" (the demo's prompt).
  mme         the tiny world's yes/no benchmark in MME's release layout: one folder per attribute
              (colour, shape, size, position, background), each with --count images
              NNNNNN.jpg and beside each NNNNNN.txt: two "question<TAB>answer" lines, the first
              about the image's value ("Yes"), the second about another value ("No"), e.g.
              "Is there a red shape in the image? Please answer yes or no.<TAB>Yes".
  pope        the same world in POPE's layout: DIR/shapes_pope.jsonl, one JSON line per question
              ({"question_id", "image", "text", "label"}), two per image about the object (its
              shape: "Is there a circle in the image?" "yes"; another shape: "no"), and
              DIR/images/NNNNNN.jpg.
  urls        the input of the download path: DIR/captions.json, a JSON list of {"url", "caption"}
              records like BLIP's laion_synthetic_filtered_large.json, and DIR/images/*.jpg for
              `python -m http.server --bind 127.0.0.1 PORT --directory DIR` to serve; the URLs are
              --base-url + "images/NNNNNN.jpg". --missing M adds M records whose images are not
              written, so that they answer 404.

MiniGPT-v2's layouts, of scenes with one to three shapes and their boxes (tiny_world/scenes.py;
each layout in detail: tiny_world/v2_formats.py); the script prints the --options that point a
v2 config's datasets at the files:
  refcoco       REFER's refcoco/refs(unc).p + refcoco/instances.json + images/COCO_train2014_*.jpg
                (the refcoco and invrefcoco datasets: [refer] and [identify]) and the evaluation
                file refcoco/refcoco_val.json (python -m minigpt4.evaluate --benchmark refcoco
                --data DIR).
  flickr        Flickr30k Entities as MiniGPT-v2 filters it: groundedcaption.json ([grounding]),
                phrasetobbox.json, images/{id}.jpg.
  coco-caption  LAVIS's coco_karpathy_train.json + images/train/ ([caption]).
  coco-vqa      LAVIS's vqa_train.json + images/train/ ([vqa]: count, colour, shape, background).

--styled draws every image in a style sampled for it (named shades of its colour and background
words, canvas size and aspect, hard or smooth edges, PNG or JPEG; tiny_world/world.py), as users
draw; the scenes and captions are those of the plain world.

Sample i of a seed is the same in every format and does not depend on --count: the same seed and
count give byte-identical files (the webdataset layout's timings in _stats.json excepted).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import math
import os
import sys
import tarfile
import time
from collections.abc import Callable
from types import ModuleType

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_module(name: str) -> ModuleType:
    """The package module ``name``, without importing the whole package when it is not loaded.

    ``import minigpt4`` registers every model and pulls torch and transformers (seconds); the
    modules used here need only PIL or the standard library, so a plain run of this script
    loads those files alone.
    """
    if name in sys.modules or "minigpt4" in sys.modules:
        return importlib.import_module(name)
    path = os.path.join(REPO_ROOT, *name.split(".")) + ".py"
    spec = importlib.util.spec_from_file_location("_" + name.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


# The world (tiny_world/, PIL and the standard library only) is imported from the checkout.
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
from tiny_world import v2_formats  # noqa: E402
from tiny_world import world as _world  # noqa: E402

atomic_write = _load_module("minigpt4.common.atomic_write").atomic_write
make_sample = _world.make_sample
to_jpeg_bytes = _world.to_jpeg_bytes

DEFAULT_BASE_URL = "http://127.0.0.1:8000/"
CAPTIONS_JSON = "captions.json"
# img2dataset's defaults: keys are shard id then sample index, zero-padded.
OOM_SHARD_COUNT = 5


def image_url(base_url: str, index: int) -> str:
    """The URL under which the `urls` layout serves sample ``index``."""
    return base_url.rstrip("/") + f"/images/{index:06d}.jpg"


def _replace_atomically(path: str, data: bytes) -> None:
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def save_file(path: str, data: bytes) -> None:
    """Write ``path`` atomically, creating its folder."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    _replace_atomically(path, data)


def _write_json(path: str, obj: object, indent: int | None = None) -> None:
    _replace_atomically(path, json.dumps(obj, indent=indent, ensure_ascii=False).encode("utf-8"))


def write_url_list(
    out: str,
    seed: int,
    count: int,
    base_url: str = DEFAULT_BASE_URL,
    image_size: int = 224,
    missing: int = 0,
    styled: bool = False,
) -> list[dict]:
    """Write ``out/captions.json`` and ``out/images/NNNNNN.jpg``; return the records.

    The ``missing`` extra records point at images that are not written (indices after ``count``),
    so a web server answers 404 for them; they are spread through the list.
    """
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    records = []
    for i in range(count):
        sample = make_sample(seed, i, image_size, styled)
        _replace_atomically(
            os.path.join(out, "images", f"{i:06d}.jpg"), to_jpeg_bytes(sample.image)
        )
        records.append({"url": image_url(base_url, i), "caption": sample.short_caption})
    for j in range(missing):
        index = count + j
        sample = make_sample(seed, index, 16)  # only its caption is used
        position = (j + 1) * len(records) // (missing + 1)
        records.insert(
            position, {"url": image_url(base_url, index), "caption": sample.short_caption}
        )
    _write_json(os.path.join(out, CAPTIONS_JSON), records, indent=1)
    return records


def _demo_prompt() -> Callable[[str], str]:
    """``tiny_world.text.demo_prompt``: the Chat's prompt needs the package (torch)."""
    from tiny_world.text import demo_prompt

    return demo_prompt


def yes_no_records(seed: int, index: int, scene, image_id: str, pairs: int) -> list[dict]:
    """``pairs`` MME-style pairs about sample ``index`` (a random attribute each, the true value
    then another), as cc_sbu_align records whose ``instruction`` is the demo's prompt."""
    if pairs == 0:
        return []
    demo_prompt = _demo_prompt()
    rng = _world.question_rng(seed, index, "align")
    records = []
    for _ in range(pairs):
        attribute = rng.choice(_world.YES_NO_ATTRIBUTES)
        for question, answer in _world.question_pair(scene, attribute, rng):
            prompt = demo_prompt(question + _world.MME_SUFFIX)
            records.append({"image_id": image_id, "caption": answer, "instruction": prompt})
    return records


def write_align(
    out: str,
    seed: int,
    count: int,
    image_size: int = 224,
    yes_no_pairs: int = 0,
    styled: bool = False,
) -> list[dict]:
    """Write a cc_sbu_align folder: ``filter_cap.json`` + ``image/{id}.jpg``; return its records.

    Each image has its description and ``yes_no_pairs`` pairs of yes/no questions."""
    os.makedirs(os.path.join(out, "image"), exist_ok=True)
    annotations = []
    for i in range(count):
        sample = make_sample(seed, i, image_size, styled)
        image_id = str(i)
        _replace_atomically(
            os.path.join(out, "image", f"{image_id}.jpg"), to_jpeg_bytes(sample.image)
        )
        annotations.append({"image_id": image_id, "caption": sample.long_description})
        annotations.extend(yes_no_records(seed, i, sample.scene, image_id, yes_no_pairs))
    _write_json(os.path.join(out, "filter_cap.json"), {"annotations": annotations})
    return annotations


def mme_sample_index(category: int, image: int) -> int:
    """The world sample behind image ``image`` of MME category ``category``: categories
    interleave, so every category has its own images and none depends on --count."""
    return image * len(_world.YES_NO_ATTRIBUTES) + category


def write_mme(
    out: str, seed: int, count: int, image_size: int = 224, styled: bool = False
) -> list[str]:
    """Write the MME release layout (``out/<attribute>/NNNNNN.{jpg,txt}``); return the folders."""
    folders = []
    for k, attribute in enumerate(_world.YES_NO_ATTRIBUTES):
        folder = os.path.join(out, attribute)
        os.makedirs(folder, exist_ok=True)
        for i in range(count):
            index = mme_sample_index(k, i)
            sample = make_sample(seed, index, image_size, styled)
            rng = _world.question_rng(seed, index, attribute)
            pair = _world.question_pair(sample.scene, attribute, rng)
            lines = "".join(f"{q}{_world.MME_SUFFIX}\t{a}\n" for q, a in pair)
            _replace_atomically(os.path.join(folder, f"{i:06d}.jpg"), to_jpeg_bytes(sample.image))
            _replace_atomically(os.path.join(folder, f"{i:06d}.txt"), lines.encode("utf-8"))
        folders.append(folder)
    return folders


POPE_FILE = "shapes_pope.jsonl"


def write_pope(
    out: str, seed: int, count: int, image_size: int = 224, styled: bool = False
) -> list[dict]:
    """Write ``out/shapes_pope.jsonl`` and ``out/images/NNNNNN.jpg``; return the questions."""
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    records = []
    for i in range(count):
        sample = make_sample(seed, i, image_size, styled)
        name = f"{i:06d}.jpg"
        _replace_atomically(os.path.join(out, "images", name), to_jpeg_bytes(sample.image))
        rng = _world.question_rng(seed, i, "pope")
        for question, answer in _world.question_pair(sample.scene, "shape", rng):
            records.append(
                {
                    "question_id": len(records) + 1,
                    "image": name,
                    "text": question,
                    "label": answer.lower(),
                }
            )
    text = "".join(json.dumps(r) + "\n" for r in records)
    _replace_atomically(os.path.join(out, POPE_FILE), text.encode("utf-8"))
    return records


def _parquet_schema():
    import pyarrow as pa

    # img2dataset's reader selects caption then url; its downloader appends the rest (same types).
    return pa.schema(
        [
            ("caption", pa.string()),
            ("url", pa.string()),
            ("key", pa.string()),
            ("status", pa.string()),
            ("error_message", pa.string()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("original_width", pa.int32()),
            ("original_height", pa.int32()),
            ("exif", pa.string()),
            ("sha256", pa.string()),
        ]
    )


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    # As webdataset's TarWriter sets them, but with a fixed mtime so equal samples give equal tars.
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o444
    info.uname = info.gname = "bigdata"
    tar.addfile(info, io.BytesIO(data))


def write_webdataset(
    out: str,
    seed: int,
    count: int,
    shard_size: int = 10000,
    image_size: int = 224,
    base_url: str = DEFAULT_BASE_URL,
    styled: bool = False,
) -> list[str]:
    """Write img2dataset-style webdataset shards; return the tar paths.

    Per shard: ``{shard:05d}.tar`` (``{key}.jpg``, ``{key}.txt``, ``{key}.json``),
    ``{shard:05d}.parquet`` (one row per sample) and ``{shard:05d}_stats.json``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    os.makedirs(out, exist_ok=True)
    oom_sample = math.ceil(math.log10(shard_size))
    schema = _parquet_schema()
    tars = []
    for shard_id, start in enumerate(range(0, count, shard_size)):
        t0 = time.time()
        name = f"{shard_id:0{OOM_SHARD_COUNT}d}"
        rows: dict[str, list] = {field: [] for field in schema.names}
        tar_path = os.path.join(out, name + ".tar")
        with (
            atomic_write(tar_path) as tmp,
            tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for i in range(start, min(start + shard_size, count)):
                sample = make_sample(seed, i, image_size, styled)
                jpg = to_jpeg_bytes(sample.image)
                key = f"{shard_id * 10**oom_sample + (i - start):0{oom_sample + OOM_SHARD_COUNT}d}"
                meta = {
                    "caption": sample.short_caption,
                    "url": image_url(base_url, i),
                    "key": key,
                    "status": "success",
                    "error_message": None,
                    "width": image_size,
                    "height": image_size,
                    "original_width": image_size,
                    "original_height": image_size,
                    "exif": "{}",  # a JPEG without EXIF tags, as exifread reports it
                    "sha256": hashlib.sha256(jpg).hexdigest(),
                }
                # webdataset's TarWriter writes a sample's files in sorted order.
                _tar_add(tar, f"{key}.jpg", jpg)
                _tar_add(tar, f"{key}.json", json.dumps(meta, indent=4).encode("utf-8"))
                _tar_add(tar, f"{key}.txt", sample.short_caption.encode("utf-8"))
                for field in schema.names:
                    rows[field].append(meta[field])
        tars.append(tar_path)

        table = pa.Table.from_pydict(rows, schema)
        with atomic_write(os.path.join(out, name + ".parquet")) as tmp:
            pq.write_table(table, tmp)
        n = len(rows["key"])
        t1 = time.time()
        stats = {
            "count": n,
            "successes": n,
            "failed_to_download": 0,
            "failed_to_resize": 0,
            "duration": t1 - t0,
            "start_time": t0,
            "end_time": t1,
            "status_dict": {"success": n},
        }
        _write_json(os.path.join(out, name + "_stats.json"), stats, indent=4)
    return tars


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Generate the synthetic shapes world as webdataset shards, a cc_sbu_align "
        "folder, a caption JSON + images to serve over HTTP, its yes/no benchmark in the MME "
        "or POPE layout, or scenes of 1-3 shapes in MiniGPT-v2's layouts.",
        epilog="Vocabulary and examples: dataset/README_SYNTHETIC.md",
    )
    parser.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    parser.add_argument("--count", type=int, required=True, help="number of images")
    parser.add_argument(
        "--format",
        choices=("webdataset", "align", "urls", "mme", "pope", *v2_formats.FORMATS),
        required=True,
        help="output layout",
    )
    parser.add_argument("--out", required=True, help="output folder (created if needed)")
    parser.add_argument(
        "--shard-size", type=int, default=10000, help="webdataset: samples per shard (10000)"
    )
    parser.add_argument("--image-size", type=int, default=224, help="image side in pixels (224)")
    parser.add_argument(
        "--base-url",
        default=DEFAULT_BASE_URL,
        help=f"urls/webdataset: URL prefix of the served folder (default {DEFAULT_BASE_URL})",
    )
    parser.add_argument(
        "--missing", type=int, default=0, help="urls: add this many records whose images 404"
    )
    parser.add_argument(
        "--yes-no-pairs",
        type=int,
        default=0,
        help="align: also this many MME-style pairs of yes/no questions per image (default 0)",
    )
    parser.add_argument(
        "--styled",
        action="store_true",
        help="draw each image in a sampled style: named shades of its colours, canvas size and "
        "aspect, edges, PNG or JPEG (tiny_world/world.py: sample_style), resized to --image-size",
    )
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    if args.image_size < 16:
        parser.error("--image-size must be at least 16")
    if args.missing < 0:
        parser.error("--missing must be >= 0")
    if args.yes_no_pairs < 0:
        parser.error("--yes-no-pairs must be >= 0")
    if args.shard_size < 1:
        parser.error("--shard-size must be at least 1")

    if args.format == "webdataset":
        tars = write_webdataset(
            args.out,
            args.seed,
            args.count,
            args.shard_size,
            args.image_size,
            args.base_url,
            args.styled,
        )
        last = len(tars) - 1
        pattern = f"{args.out}/{{00000..{last:05d}}}.tar"
        print(f"wrote {args.count} samples in {len(tars)} shards: {pattern}")
    elif args.format == "align":
        records = write_align(
            args.out, args.seed, args.count, args.image_size, args.yes_no_pairs, args.styled
        )
        print(f"wrote {args.count} images and {len(records)} records in {args.out}/filter_cap.json")
    elif args.format == "mme":
        folders = write_mme(args.out, args.seed, args.count, args.image_size, args.styled)
        print(f"wrote {len(folders)} MME categories of {args.count} images (2 questions each)")
    elif args.format == "pope":
        records = write_pope(args.out, args.seed, args.count, args.image_size, args.styled)
        print(f"wrote {len(records)} POPE questions to {os.path.join(args.out, POPE_FILE)}")
    elif args.format in v2_formats.FORMATS:
        if args.styled:
            parser.error(f"--styled is for the one-shape world, not --format {args.format}")
        write = v2_formats.WRITERS[args.format]
        info = write(args.out, args.seed, args.count, args.image_size, save_file)
        print(f"wrote {args.count} scenes of 1-3 shapes in the {args.format} layout in {args.out}")
        print("point a MiniGPT-v2 config at them with --options " + " ".join(
            v2_formats.config_options(info)))  # fmt: skip
    else:
        records = write_url_list(
            args.out,
            args.seed,
            args.count,
            args.base_url,
            args.image_size,
            args.missing,
            args.styled,
        )
        print(
            f"wrote {len(records)} records ({args.missing} missing) to "
            f"{os.path.join(args.out, CAPTIONS_JSON)} and {args.count} images; serve with: "
            f"python -m http.server --bind 127.0.0.1 PORT --directory {args.out}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
