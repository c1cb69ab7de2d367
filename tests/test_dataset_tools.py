"""dataset/ tools: converters, download scripts (with a stand-in img2dataset), generator, inspector.

The real img2dataset run is in test_img2dataset_e2e.py; here a fake ``img2dataset`` records the
command line the download scripts build, so the original's flags are checked exactly.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from minigpt4.common.registry import registry

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASET = REPO_ROOT / "dataset"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"dataset_{name}", DATASET / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


convert_captions = _load("convert_captions")
make_synthetic = _load("make_synthetic")
inspect_shards = _load("inspect_shards")


def _records(n: int, **extra) -> list[dict]:
    return [
        {"url": f"https://example.com/{i}.jpg", "caption": f"caption {i}", **extra}
        for i in range(n)
    ]


def _read_tsv_like_img2dataset(path: Path) -> pa.Table:
    # img2dataset 1.47 reader.py: csv_pa.read_csv(file, parse_options=ParseOptions(delimiter="\t"))
    return pa_csv.read_csv(path, parse_options=pa_csv.ParseOptions(delimiter="\t"))


def _convert(args, cwd, script="convert_laion.py"):
    return subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


# ----------------------------------------------------------------------------- converters


def test_converters_are_one_implementation_that_copies_as_a_full_script(tmp_path):
    for name in ("convert_cc_sbu.py", "convert_laion.py"):
        assert (DATASET / name).resolve() == (DATASET / "convert_captions.py").resolve()
        shutil.copy(DATASET / name, tmp_path)
        copied = tmp_path / name
        assert not copied.is_symlink()
        assert copied.read_bytes() == (DATASET / "convert_captions.py").read_bytes()


@pytest.mark.parametrize(
    "script, json_name, tsv_name",
    [
        (
            "convert_cc_sbu.py",
            "ccs_synthetic_filtered_large.json",
            "ccs_synthetic_filtered_large.tsv",
        ),
        (
            "convert_laion.py",
            "laion_synthetic_filtered_large.json",
            "laion_synthetic_filtered_large.tsv",
        ),
    ],
)
def test_copied_converter_without_arguments_does_what_the_original_did(
    tmp_path, script, json_name, tsv_name
):
    shutil.copy(DATASET / script, tmp_path)
    records = _records(30)
    (tmp_path / json_name).write_text(json.dumps(records))
    out = _convert([], tmp_path, tmp_path / script)
    assert out.returncode == 0, out.stderr
    table = _read_tsv_like_img2dataset(tmp_path / tsv_name)
    assert table.column_names == ["url", "caption"]
    assert table.to_pylist() == records


def test_limit_keeps_the_first_n_records_and_stops_reading(tmp_path):
    good = json.dumps(_records(20))
    # Valid first records followed by garbage: only a reader that stops early succeeds.
    (tmp_path / "big.json").write_text(good[:-1] + ", {broken json")
    out = _convert(["big.json", "out.tsv", "--limit", "7"], tmp_path, DATASET / "convert_laion.py")
    assert out.returncode == 0, out.stderr
    assert "wrote 7 rows" in out.stdout
    assert _read_tsv_like_img2dataset(tmp_path / "out.tsv").to_pylist() == _records(7)

    out = _convert(["big.json", "all.tsv"], tmp_path, DATASET / "convert_laion.py")
    assert out.returncode == 2 and "invalid JSON in element 20" in out.stderr
    assert not (tmp_path / "all.tsv").exists()
    assert not list(tmp_path.glob(".convert-*")), "temporary file left behind"

    for bad in ("0", "-3"):
        out = _convert(
            ["big.json", "x.tsv", "--limit", bad], tmp_path, DATASET / "convert_laion.py"
        )
        assert out.returncode == 2 and "--limit must be a positive number" in out.stderr


def test_columns_are_matched_by_name_and_awkward_text_survives_img2dataset_reader(tmp_path):
    records = [
        {"url": "https://a/0.jpg", "caption": 'say "cheese"', "sim": 0.31},
        # keys in another order, one missing, one the first record does not have
        {"caption": "tab\there, newline\nthere", "url": "https://a/1.jpg", "extra": 1},
        {"sim": 0.5, "url": "https://a/2.jpg", "caption": "naïve café, 東京"},
    ]
    (tmp_path / "in.json").write_text(json.dumps(records, ensure_ascii=False, indent=2))
    out = _convert(["in.json", "out.tsv"], tmp_path, DATASET / "convert_laion.py")
    assert out.returncode == 0, out.stderr
    assert "key 'extra' (in 1 records) is not in the first record; dropped" in out.stdout
    rows = _read_tsv_like_img2dataset(tmp_path / "out.tsv").to_pylist()
    assert [r["url"] for r in rows] == ["https://a/0.jpg", "https://a/1.jpg", "https://a/2.jpg"]
    assert [r["caption"] for r in rows] == [
        'say "cheese"',
        "tab here, newline there",
        "naïve café, 東京",
    ]
    assert [r["sim"] for r in rows] == [0.31, None, 0.5]


def test_parquet_output(tmp_path):
    records = _records(12)
    (tmp_path / "in.json").write_text(json.dumps(records))
    out = _convert(
        ["in.json", "out.parquet", "--limit", "5"], tmp_path, DATASET / "convert_laion.py"
    )
    assert out.returncode == 0, out.stderr
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema.names == ["url", "caption"]
    assert table.to_pylist() == records[:5]
    out = _convert(["in.json", "--format", "parquet"], tmp_path, DATASET / "convert_laion.py")
    assert out.returncode == 0 and pq.read_table(tmp_path / "in.parquet").num_rows == 12


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"url": "x", "caption": "y"}', "holds a JSON object, not a list"),
        ("", "the file is empty"),
        ("[]", "the list is empty"),
        ('["https://a/0.jpg"]', "element 0 is str"),
        ('[{"url": "https://a/0.jpg", "text": "y"}]', "record 0 has no 'caption' key"),
        ('[{"url": "https://a/0.jpg", "caption": "y"}, {"caption": "z"}]', "record 1 has no 'url'"),
        ('[{"url": "", "caption": "y"}]', "the url must be a non-empty string"),
        ('[{"url": "https://a/0.jpg", "caption": "y"}', "not closed with ']'"),
        ('[{"url": "https://a/0.jpg", "caption": "y"} {"url": 1}]', "expected ',' or ']'"),
        ("url\tcaption\nhttps://a\tb\n", "not a list"),
    ],
)
def test_clear_errors_for_files_that_are_not_caption_records(tmp_path, content, message):
    (tmp_path / "in.json").write_text(content)
    out = _convert(["in.json", "out.tsv"], tmp_path, DATASET / "convert_cc_sbu.py")
    assert out.returncode == 2
    assert message in out.stderr, out.stderr
    assert "in.json" in out.stderr
    assert not (tmp_path / "out.tsv").exists()


def test_missing_input_file_is_named(tmp_path):
    out = _convert(["nope.json"], tmp_path, DATASET / "convert_laion.py")
    assert out.returncode == 2 and "nope.json: no such file" in out.stderr
    # Under its own name with no argument and no default file in the folder: names the default.
    out = _convert([], tmp_path, DATASET / "convert_laion.py")
    assert out.returncode == 2 and "laion_synthetic_filtered_large.json" in out.stderr


def test_incremental_reader_agrees_with_json_load_across_chunk_boundaries(tmp_path, monkeypatch):
    values = [
        {"url": "https://a/[0].jpg", "caption": "brackets ] and , commas", "n": 12345678901234},
        {"url": "https://a/1.jpg", "caption": 'escaped \\" quote and \\u00e9', "f": -1.5e-7},
        {"url": "https://a/2.jpg", "caption": "x" * 300, "nested": {"a": [1, 2, {"b": None}]}},
        {"url": "https://a/3.jpg", "caption": "last", "n": 7},
    ]
    for indent in (None, 3):
        path = tmp_path / f"in{indent}.json"
        path.write_text("\ufeff \n" + json.dumps(values, indent=indent) + "\n\n")
        for chunk in (1, 2, 3, 7, 64, 1 << 20):
            monkeypatch.setattr(convert_captions, "_CHUNK", chunk)
            assert list(convert_captions.iter_json_list(str(path))) == values, (indent, chunk)


# ----------------------------------------------------------------------------- download scripts

# Records its command line and environment; a Python script so that PATH filtering below
# cannot take its interpreter away.
FAKE_IMG2DATASET = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["FAKE_LOG"], "w") as f:
    json.dump({{"argv": sys.argv[1:], "WANDB_MODE": os.environ.get("WANDB_MODE"),
               "NO_ALBUMENTATIONS_UPDATE": os.environ.get("NO_ALBUMENTATIONS_UPDATE")}}, f)
"""


def _fake_img2dataset(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "img2dataset"
    exe.write_text(FAKE_IMG2DATASET)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return exe


def _clean_env(tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("IMG2DATASET", "WANDB_MODE")}
    # PATH without any real img2dataset
    env["PATH"] = os.pathsep.join(
        p for p in env["PATH"].split(os.pathsep) if not (Path(p) / "img2dataset").exists()
    )
    env["FAKE_LOG"] = str(tmp_path / "fake.json")
    env.update(extra)
    return env


def _download(script: Path, args, cwd, env):
    return subprocess.run(
        ["sh", str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "script, tsv, folder",
    [
        ("download_cc_sbu.sh", "ccs_synthetic_filtered_large.tsv", "cc_sbu_dataset"),
        ("download_laion.sh", "laion_synthetic_filtered_large.tsv", "laion_dataset"),
    ],
)
def test_copied_download_script_runs_img2dataset_with_the_original_flags(
    tmp_path, script, tsv, folder
):
    shutil.copy(DATASET / script, tmp_path)
    (tmp_path / tsv).write_text("url\tcaption\n")
    exe = _fake_img2dataset(tmp_path / "bin")
    env = _clean_env(tmp_path, IMG2DATASET=str(exe))
    out = _download(tmp_path / script, [], tmp_path, env)
    assert out.returncode == 0, out.stderr
    log = json.loads((tmp_path / "fake.json").read_text())
    # The original's command (FACTS g), image size as its later commit, wandb off.
    assert log["argv"] == [
        "--url_list", tsv, "--input_format", "tsv", "--url_col", "url",
        "--caption_col", "caption", "--output_format", "webdataset",
        "--output_folder", folder, "--processes_count", "16", "--thread_count", "128",
        "--image_size", "224", "--enable_wandb", "False",
    ]  # fmt: skip
    assert log["WANDB_MODE"] == "disabled" and log["NO_ALBUMENTATIONS_UPDATE"] == "1"


def test_download_options_and_wandb_on_request(tmp_path):
    (tmp_path / "list.parquet").write_bytes(b"")
    exe = _fake_img2dataset(tmp_path / "bin")
    env = _clean_env(tmp_path, IMG2DATASET=str(exe))
    args = [
        "--url_list", "list.parquet", "--output_folder", "shards", "--processes", "2",
        "--threads", "8", "--image_size", "256", "--enable_wandb",
        "--", "--number_sample_per_shard", "100",
    ]  # fmt: skip
    out = _download(DATASET / "download_laion.sh", args, tmp_path, env)
    assert out.returncode == 0, out.stderr
    log = json.loads((tmp_path / "fake.json").read_text())
    argv = log["argv"]
    pairs = dict(zip(argv[0:-2:2], argv[1:-2:2]))
    assert pairs["--input_format"] == "parquet"
    assert pairs["--processes_count"] == "2" and pairs["--thread_count"] == "8"
    assert pairs["--image_size"] == "256" and pairs["--enable_wandb"] == "True"
    assert argv[-2:] == ["--number_sample_per_shard", "100"]
    assert log["WANDB_MODE"] is None


def test_download_script_finds_the_repository_venv_and_explains_when_missing(tmp_path):
    # A copy of the repository layout: dataset/download_laion.sh + .venv-img2dataset/bin.
    (tmp_path / "repo" / "dataset").mkdir(parents=True)
    script = tmp_path / "repo" / "dataset" / "download_laion.sh"
    shutil.copy(DATASET / "download_laion.sh", script)
    (tmp_path / "list.tsv").write_text("url\tcaption\n")
    env = _clean_env(tmp_path)
    args = ["--url_list", "list.tsv", "--output_folder", "out"]

    out = _download(script, args, tmp_path, env)
    assert out.returncode == 127
    assert "setup_img2dataset.sh" in out.stderr

    _fake_img2dataset(tmp_path / "repo" / ".venv-img2dataset" / "bin")
    out = _download(script, args, tmp_path, env)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "fake.json").read_text())["argv"][:2] == [
        "--url_list",
        "list.tsv",
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--threads", "x"], "--threads must be a positive integer"),
        (["--processes", "0"], "--processes must be a positive integer"),
        (["--image_size"], "needs a value"),
        (["--wandb"], "unknown option '--wandb'"),
        (["--url_list", "missing.tsv"], "url list 'missing.tsv' not found"),
        (["--url_list", "list.txt"], "should end in .tsv or .parquet"),
    ],
)
def test_download_script_rejects_bad_options(tmp_path, args, message):
    (tmp_path / "list.txt").write_text("x")
    out = _download(DATASET / "download_laion.sh", args, tmp_path, _clean_env(tmp_path))
    assert out.returncode == 2
    assert message in out.stderr, out.stderr


# ----------------------------------------------------------------------------- generator

# What img2dataset 1.47 writes (downloader.py / writer.py): the input columns it selects
# (caption, url), then key, status, error_message, width, height, original_width,
# original_height, exif (extract_exif default True), sha256 (compute_hash default "sha256").
IMG2DATASET_COLUMNS = [
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
STATS_KEYS = [
    "count",
    "successes",
    "failed_to_download",
    "failed_to_resize",
    "duration",
    "start_time",
    "end_time",
    "status_dict",
]


def test_webdataset_layout_is_img2datasets(tmp_path):
    tars = make_synthetic.write_webdataset(
        str(tmp_path), seed=4, count=23, shard_size=10, image_size=48
    )
    assert [os.path.basename(t) for t in tars] == ["00000.tar", "00001.tar", "00002.tar"]
    for shard, expected in enumerate([10, 10, 3]):
        name = f"{shard:05d}"
        stats = json.loads((tmp_path / f"{name}_stats.json").read_text())
        assert list(stats) == STATS_KEYS
        assert (stats["count"], stats["successes"], stats["status_dict"]) == (
            expected,
            expected,
            {"success": expected},
        )
        table = pq.read_table(tmp_path / f"{name}.parquet")
        assert [(f.name, f.type) for f in table.schema] == IMG2DATASET_COLUMNS
        assert table.num_rows == expected
        with tarfile.open(tmp_path / f"{name}.tar") as tar:
            members = tar.getmembers()
            files = {m.name: tar.extractfile(m).read() for m in members}
        # img2dataset's key: shard id * 10**ceil(log10(shard size)) + index, 1 + 5 digits here
        keys = [f"{shard * 10 + i:06d}" for i in range(expected)]
        assert [m.name for m in members] == [
            f"{k}.{e}" for k in keys for e in ("jpg", "json", "txt")
        ]
        for key, row in zip(keys, table.to_pylist()):
            meta = json.loads(files[f"{key}.json"])
            assert meta == row
            assert list(meta) == [name for name, _ in IMG2DATASET_COLUMNS]
            assert (
                meta["key"] == key and meta["status"] == "success" and meta["error_message"] is None
            )
            assert files[f"{key}.txt"].decode() == meta["caption"]
            jpg = files[f"{key}.jpg"]
            assert hashlib.sha256(jpg).hexdigest() == meta["sha256"]
            img = Image.open(io.BytesIO(jpg))
            assert img.format == "JPEG" and img.size == (meta["width"], meta["height"]) == (48, 48)


def test_webdataset_output_feeds_the_laion_builder(tmp_path):
    make_synthetic.write_webdataset(str(tmp_path), seed=5, count=12, shard_size=5, image_size=32)
    cfg = OmegaConf.create(
        {
            "data_type": "images",
            "build_info": {"storage": str(tmp_path / "{00000..00002}.tar")},
            "vis_processor": {"train": {"name": "blip2_image_train", "image_size": 32}},
            "text_processor": {"train": {"name": "blip_caption"}},
        }
    )
    dataset = registry.get_builder_class("laion")(cfg).build_datasets()["train"]
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=0)))
    assert batch["image"].shape == (4, 3, 32, 32)
    captions = {make_synthetic.make_sample(5, i, 32).short_caption for i in range(12)}
    assert set(batch["text_input"]) <= captions


def test_align_folder_feeds_the_cc_sbu_align_builder(tmp_path):
    annotations = make_synthetic.write_align(str(tmp_path), seed=6, count=5, image_size=40)
    data = json.loads((tmp_path / "filter_cap.json").read_text())
    assert data == {"annotations": annotations}
    assert [a["image_id"] for a in annotations] == ["0", "1", "2", "3", "4"]
    for i, a in enumerate(annotations):
        assert a["caption"] == make_synthetic.make_sample(6, i, 40).long_description
        assert Image.open(tmp_path / "image" / f"{a['image_id']}.jpg").size == (40, 40)
    cfg = OmegaConf.create(
        {
            "data_type": "images",
            "build_info": {"storage": str(tmp_path)},
            "vis_processor": {"train": {"name": "blip2_image_eval", "image_size": 40}},
            "text_processor": {"train": {"name": "blip_caption"}},
        }
    )
    dataset = registry.get_builder_class("cc_sbu_align")(cfg).build_datasets()["train"]
    assert len(dataset) == 5
    item = dataset[2]
    assert item["image"].shape == (3, 40, 40)
    assert item["text_input"] == annotations[2]["caption"]  # stage 2 captions are used raw


def test_align_folder_with_yes_no_pairs_asks_as_the_demo_does(tmp_path):
    from minigpt4.conversation.chat import Chat
    from minigpt4.conversation.templates import CONV_VISION

    records = make_synthetic.write_align(
        str(tmp_path), seed=6, count=4, image_size=40, yes_no_pairs=2
    )
    assert len(records) == 4 * (1 + 4)
    for i in range(4):
        scene = make_synthetic.make_sample(6, i, 40).scene
        own = [r for r in records if r["image_id"] == str(i)]
        assert own[0] == {
            "image_id": str(i),
            "caption": make_synthetic.make_sample(6, i, 40).long_description,
        }
        assert [r["caption"] for r in own[1:]] == ["Yes", "No", "Yes", "No"]
        for record in own[1:]:
            question = record["instruction"].split("</Img> ", 1)[1].split("###Assistant:")[0]
            assert question.endswith(" Please answer yes or no.")
            # the prompt the demo's Chat builds for this question about a new image
            conv = CONV_VISION.copy()
            conv.append_message(conv.roles[0], "<Img><ImageHere></Img>")
            Chat.ask(None, question, conv)
            conv.append_message(conv.roles[1], None)
            assert record["instruction"] == conv.get_prompt()
            values = (scene.colour, scene.shape, scene.size, scene.position, scene.background)
            true = any(re.search(rf"\b{v}\b", question) for v in values)
            assert (record["caption"] == "Yes") == true, (question, scene)
    again = tmp_path / "again"
    assert (
        make_synthetic.write_align(str(again), seed=6, count=4, image_size=40, yes_no_pairs=2)
        == records
    )


def test_url_list_layout_with_missing_images(tmp_path):
    base = "http://127.0.0.1:9999/"
    records = make_synthetic.write_url_list(
        str(tmp_path), seed=7, count=8, base_url=base, image_size=32, missing=3
    )
    assert json.loads((tmp_path / "captions.json").read_text()) == records
    assert len(records) == 11
    assert all(set(r) == {"url", "caption"} and r["url"].startswith(base) for r in records)
    present = [r for r in records if (tmp_path / r["url"][len(base) :]).is_file()]
    assert len(present) == 8
    missing_positions = [i for i, r in enumerate(records) if r not in present]
    assert missing_positions not in ([8, 9, 10], [0, 1, 2])  # spread, not bunched at an end
    for r in present:
        index = int(Path(r["url"]).stem)
        assert r["caption"] == make_synthetic.make_sample(7, index, 32).short_caption


def _scene_of(seed: int, index: int, size: int):
    return make_synthetic.make_sample(seed, index, size).scene


def test_mme_layout_holds_true_balanced_pairs(tmp_path):
    from minigpt4.evaluation.mme_data import read_mme
    from tiny_world import world

    make_synthetic.write_mme(str(tmp_path), seed=9, count=4, image_size=32)
    items = read_mme(tmp_path)
    assert len(items) == 5 * 4 * 2
    assert {i.category for i in items} == set(world.YES_NO_ATTRIBUTES)
    images = set()
    for k, attribute in enumerate(world.YES_NO_ATTRIBUTES):
        rows = [i for i in items if i.category == attribute]
        assert [i.answer for i in rows] == ["Yes", "No"] * 4  # MME's order: true, then false
        for n in range(4):
            index = make_synthetic.mme_sample_index(k, n)
            images.add(index)
            scene = _scene_of(9, index, 32)
            yes, no = rows[2 * n].question, rows[2 * n + 1].question
            assert yes == world.yes_no_question(attribute, getattr(scene, attribute)) + (
                world.MME_SUFFIX
            )
            assert no != yes and no.endswith(world.MME_SUFFIX)
            assert rows[2 * n].image_path.read_bytes() == make_synthetic.to_jpeg_bytes(
                make_synthetic.make_sample(9, index, 32).image
            )
    assert len(images) == 20  # every category has its own images


def test_pope_layout_asks_about_the_shape(tmp_path):
    from minigpt4.evaluation.pope_data import read_pope
    from tiny_world import world

    records = make_synthetic.write_pope(str(tmp_path), seed=10, count=5, image_size=32)
    items = read_pope(tmp_path)
    assert [i.answer for i in items] == ["yes", "no"] * 5
    assert [r["question_id"] for r in records] == list(range(1, 11))
    for n in range(5):
        scene = _scene_of(10, n, 32)
        assert items[2 * n].question == world.yes_no_question("shape", scene.shape)
        assert items[2 * n + 1].question in {
            world.yes_no_question("shape", s) for s in world.SHAPES if s != scene.shape
        }
        assert items[2 * n].image == f"{n:06d}.jpg"


def test_generator_cli_is_deterministic_and_fast_to_start(tmp_path):
    def run(out, fmt, seed="3"):
        return subprocess.run(
            [sys.executable, str(DATASET / "make_synthetic.py"), "--seed", seed, "--count", "6",
             "--format", fmt, "--out", str(out), "--shard-size", "4", "--image-size", "32"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip

    for fmt in ("webdataset", "align", "urls", "mme", "pope"):
        run(tmp_path / f"{fmt}1", fmt)
        run(tmp_path / f"{fmt}2", fmt)
        for f in sorted((tmp_path / f"{fmt}1").rglob("*")):
            if f.is_file() and not f.name.endswith("_stats.json"):  # stats hold timings
                twin = tmp_path / f"{fmt}2" / f.relative_to(tmp_path / f"{fmt}1")
                assert f.read_bytes() == twin.read_bytes(), f
    run(tmp_path / "other", "align", seed="4")
    assert (tmp_path / "other" / "filter_cap.json").read_bytes() != (
        tmp_path / "align1" / "filter_cap.json"
    ).read_bytes()
    bad = subprocess.run(
        [sys.executable, str(DATASET / "make_synthetic.py"), "--count", "0", "--format", "urls",
         "--out", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "--count must be at least 1" in bad.stderr


# ----------------------------------------------------------------------------- inspector


def test_expand_braces():
    assert inspect_shards.expand_braces("a/{00008..00011}.tar") == [
        "a/00008.tar",
        "a/00009.tar",
        "a/00010.tar",
        "a/00011.tar",
    ]
    assert inspect_shards.expand_braces("{x,y}/{1..2}") == ["x/1", "x/2", "y/1", "y/2"]
    assert inspect_shards.expand_braces("plain.tar") == ["plain.tar"]


def _inspect(args):
    return subprocess.run(
        [sys.executable, str(DATASET / "inspect_shards.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_inspector_counts_shows_failures_and_flags_broken_shards(tmp_path):
    make_synthetic.write_webdataset(str(tmp_path), seed=8, count=9, shard_size=4, image_size=32)
    # Pretend img2dataset failed on two URLs of shard 1.
    stats_path = tmp_path / "00001_stats.json"
    stats = json.loads(stats_path.read_text())
    stats.update(count=6, failed_to_download=2)
    stats["status_dict"]["HTTP Error 404: Not Found"] = 2
    stats_path.write_text(json.dumps(stats))

    out = _inspect([tmp_path, "--show", "2", "--save", tmp_path / "look"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 shards, 9 samples of 11 URLs" in out.stdout
    assert "2  HTTP Error 404: Not Found" in out.stdout
    assert f"{tmp_path}/{{00000..00002}}.tar" in out.stdout
    first = make_synthetic.make_sample(8, 0, 32).short_caption
    assert repr(first) in out.stdout
    assert sorted(p.name for p in (tmp_path / "look").iterdir()) == [
        "000000.jpg",
        "000001.jpg",
        "captions.tsv",
    ]

    # A truncated tar and a missing one are problems (exit 1), named in the output.
    data = (tmp_path / "00002.tar").read_bytes()
    (tmp_path / "00002.tar").write_bytes(data[:1000])  # inside the first image
    out = _inspect([tmp_path / "{00000..00003}.tar"])
    assert out.returncode == 1
    assert "PROBLEM 00003.tar" in out.stdout and "does not exist" in out.stdout
    assert "PROBLEM 00002.tar" in out.stdout


def test_inspector_checks_an_align_folder(tmp_path):
    make_synthetic.write_align(str(tmp_path), seed=9, count=3, image_size=32)
    out = _inspect([tmp_path])
    assert out.returncode == 0 and "3 annotations, 0 without an image" in out.stdout
    (tmp_path / "image" / "1.jpg").unlink()
    out = _inspect([tmp_path])
    assert out.returncode == 1 and "missing images for image_id: ['1']" in out.stdout


def test_setup_script_rejects_unknown_arguments():
    out = subprocess.run(
        ["bash", str(DATASET / "setup_img2dataset.sh"), "--nope"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and "unknown argument '--nope'" in out.stderr
