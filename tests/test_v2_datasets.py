"""MiniGPT-v2's finetune datasets: every name of minigptv2_finetune.yaml builds from files in
the original's layouts (tests/v2_data_formats.py) and gives, record by record and seed by
seed, the text the original's own dataset classes gave for the same files
(tests/fixtures/v2_original_samples/samples.json, recorded by record_original.py there)."""

import json
import logging
import os
import pickle
import random
import re
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import minigpt4  # noqa: F401 (registers the builders)
from minigpt4.common.registry import registry
from minigpt4.datasets.v2 import templates
from minigpt4.datasets.v2.base import RecordError
from minigpt4.datasets.v2.safe_pickle import UnsafePickleError, load_data_pickle

sys.path.insert(0, str(Path(__file__).parent))
import v2_data_formats

ORIGINAL = json.loads(
    (Path(__file__).parent / "fixtures" / "v2_original_samples" / "samples.json").read_text()
)
IMAGE_SIZE = 32
FINETUNE_NAMES = [name for name, _ in ORIGINAL["multi_iter_loader"]["ratios"]]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("v2data")
    return root, v2_data_formats.write_all(root)


def build(name, build_info):
    cfg = OmegaConf.create(
        {
            "build_info": build_info,
            "vis_processor": {"train": {"name": "blip2_image_train", "image_size": IMAGE_SIZE}},
            "text_processor": {"train": {"name": "blip_caption"}},
        }
    )
    return registry.get_builder_class(name)(cfg, name=name).build_datasets()["train"]


def test_every_finetune_dataset_is_recorded_and_registered():
    assert len(FINETUNE_NAMES) == 22
    assert sorted(ORIGINAL["datasets"]) == sorted(FINETUNE_NAMES)
    for name in FINETUNE_NAMES:
        assert registry.get_builder_class(name) is not None, name


@pytest.mark.parametrize("name", FINETUNE_NAMES)
def test_samples_equal_the_originals(generated, name):
    _, info = generated
    dataset = build(name, info[name])
    rows = ORIGINAL["datasets"][name]
    assert len(dataset) == len({row["index"] for row in rows})
    for row in rows:
        random.seed(row["seed"])
        sample = dataset[row["index"]]
        image = sample.pop("image", None)
        assert sample == row["sample"], (name, row["index"], row["seed"])
        if name == "unnatural_instruction":
            assert image is None  # text only
        else:
            assert image.shape == (3, IMAGE_SIZE, IMAGE_SIZE)


POOLS = {
    **dict.fromkeys(("refcoco", "refcocop", "refcocog", "refvg"), templates.REFER_POOL),
    **dict.fromkeys(("invrefcoco", "invrefcocop", "invrefcocog"), templates.IDENTIFY_POOL),
    "flickr_grounded_caption": templates.GROUNDED_CAPTION_POOL,
    "flickr_CaptionToPhrase": templates.DETECTION_POOL,
    "flickr_ObjectToPhrase": templates.DETECTION_POOL,
    **dict.fromkeys(("coco_vqa", "ok_vqa", "aok_vqa", "gqa", "ocrvqa"), templates.VQA_POOL),
    **dict.fromkeys(
        ("coco_caption", "textcaps_caption"),
        tuple(templates.CAPTION_TAG.format(t) for t in templates.CAPTION_POOL),
    ),
}


@pytest.mark.parametrize("name", sorted(POOLS))
def test_every_template_was_drawn_by_the_original(name):
    """So the comparison above checks every template's text, not only the ones drawn."""
    image = templates.image_instruction("")[:-2]  # "<Img><ImageHere></Img>"
    drawn = [r["sample"]["instruction_input"] for r in ORIGINAL["datasets"][name]]
    inner = [text[len(image) + 1 : -1] for text in drawn]
    for template in POOLS[name]:
        pattern = re.escape(template).replace(re.escape("{}"), ".+")
        assert any(re.fullmatch(pattern, text) for text in inner), (name, template)


def test_batches_collate(generated):
    _, info = generated
    for name in ("refcoco", "llava_conversation", "unnatural_instruction"):
        dataset = build(name, info[name])
        collate = getattr(dataset, "collater", torch.utils.data.default_collate)
        batch = collate([dataset[0], dataset[1]])
        keys = {"conv_q", "conv_a"} if "conversation" in name else {"instruction_input", "answer"}
        assert keys <= set(batch) and len(batch[next(iter(keys))]) == 2


def test_unreadable_image_is_skipped_with_a_counted_warning(generated, tmp_path, caplog):
    root, info = generated
    folder = tmp_path / "flickr"
    folder.mkdir()
    records = json.loads(Path(info["flickr_ObjectToPhrase"]["ann_path"]).read_text())
    for record in records:
        src = Path(info["flickr_ObjectToPhrase"]["image_path"]) / f"{record['image_id']}.jpg"
        (folder / src.name).write_bytes(src.read_bytes())
    (folder / f"{records[0]['image_id']}.jpg").write_bytes(b"not a jpeg")
    dataset = build(
        "flickr_ObjectToPhrase",
        {"image_path": str(folder), "ann_path": info["flickr_ObjectToPhrase"]["ann_path"]},
    )
    with caplog.at_level(logging.WARNING):
        sample = dataset[0]
        dataset[0]
    assert sample["image_id"] == records[1]["image_id"]  # the next record
    assert dataset.skips.skipped == 2
    assert "2 skipped so far" in caplog.text and records[0]["image_id"] in caplog.text


def test_refer_pickle_needing_code_is_refused(generated, tmp_path):
    root, info = generated
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"ref_id": 1, "call": os.getcwd}]))
    with pytest.raises(UnsafePickleError, match=r"refs\(unc\)\.p: refused to load posix\.getcwd"):
        load_data_pickle(str(path))
    ann = tmp_path / "ann" / "refcoco"
    ann.mkdir(parents=True)
    (ann / "refs(unc).p").write_bytes(path.read_bytes())
    (ann / "instances.json").write_text('{"annotations": []}')
    build_info = {**info["refcoco"], "ann_path": str(tmp_path / "ann")}
    with pytest.raises(UnsafePickleError, match="only lists, dicts"):
        build("refcoco", build_info)


def test_refer_pickle_of_plain_data_reads_as_pickle_does(generated):
    _, info = generated
    path = Path(info["refcoco"]["ann_path"]) / "refcoco" / "refs(unc).p"
    with open(path, "rb") as f:
        assert load_data_pickle(str(path)) == pickle.load(f)


def test_not_a_pickle_is_named(tmp_path):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="is not a readable pickle file"):
        load_data_pickle(str(path))


def test_bad_record_names_file_and_record(generated, tmp_path):
    _, info = generated
    records = json.loads(Path(info["llava_detail"]["ann_path"]).read_text())
    del records[1]["conversations"]
    bad = tmp_path / "detail.json"
    bad.write_text(json.dumps(records))
    with pytest.raises(RecordError, match=r"detail\.json record 1: missing field 'conversations'"):
        build("llava_detail", {**info["llava_detail"], "ann_path": str(bad)})
    vqa = json.loads(Path(info["gqa"]["annotations"]["train"]["storage"][0]).read_text())
    vqa[2]["answer"] = ["yes"]
    bad.write_text(json.dumps(vqa))
    gqa_info = {**info["gqa"], "annotations": {"train": {"storage": [str(bad)]}}}
    with pytest.raises(RecordError, match="record 2 .*'answer' is list"):
        build("gqa", gqa_info)


def test_missing_paths_and_layouts_are_named(generated, tmp_path):
    _, info = generated
    with pytest.raises(ValueError, match=r"build_info\.ann_path is not set.*--options"):
        build("llava_detail", {"image_path": info["llava_detail"]["image_path"]})
    with pytest.raises(FileNotFoundError, match=r"build_info\.ann_path = .*nowhere\.json"):
        build("textcaps_caption", {**info["textcaps_caption"], "ann_path": "/nowhere.json"})
    with pytest.raises(FileNotFoundError, match=r"refcocog.*refs\(umd\)\.p does not exist"):
        build("refcocog", {**info["refcocog"], "ann_path": str(tmp_path)})
    with pytest.raises(ValueError, match="REFER knows refcoco, refcoco\\+, refcocog"):
        build("refcoco", {**info["refcoco"], "dataset": "refclef"})
    with pytest.raises(FileNotFoundError, match=r"images\.storage>/train"):
        build("coco_vqa", {**info["coco_vqa"], "images": {"storage": str(tmp_path)}})
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"annotations": "x"}')
    with pytest.raises(ValueError, match=r"wrong\.json must hold \{\"data\""):
        build("textcaps_caption", {**info["textcaps_caption"], "ann_path": str(wrong)})


@pytest.mark.skipif(
    not (os.environ.get("MINIGPT4_ORIGINAL_REPO") and os.environ.get("VISUAL_GENOME_PACKAGE")),
    reason="set MINIGPT4_ORIGINAL_REPO (a checkout of Vision-CAIR/MiniGPT-4) and "
    "VISUAL_GENOME_PACKAGE (a folder holding the visual_genome package) to re-record",
)
def test_recording_is_what_the_original_gives_today(tmp_path):
    """Runs the original's classes again (record_original.py) and compares with the fixture."""
    import subprocess

    out = tmp_path / "samples.json"
    script = Path(__file__).parent / "fixtures" / "v2_original_samples" / "record_original.py"
    subprocess.run(
        [sys.executable, str(script), "--original", os.environ["MINIGPT4_ORIGINAL_REPO"],
         "--visual-genome", os.environ["VISUAL_GENOME_PACKAGE"], "--out", str(out),
         "--commit", ORIGINAL["original_commit"]],
        check=True, cwd=tmp_path, capture_output=True,
    )  # fmt: skip
    fresh = json.loads(out.read_text())
    assert fresh["datasets"] == ORIGINAL["datasets"]
    assert fresh["multi_iter_loader"] == ORIGINAL["multi_iter_loader"]


def test_original_import_paths_and_call_signatures(generated):
    """The original's builders' calls work on the classes at the original's import paths."""
    from minigpt4.datasets.datasets.coco_dataset import InvReferCOCODataset
    from minigpt4.datasets.datasets.flickr import GroundedDetailDataset
    from minigpt4.datasets.datasets.llava_dataset import LlavaConversationDataset
    from minigpt4.datasets.datasets.unnatural_instruction import UnnaturalDataset
    from minigpt4.datasets.datasets.vg_dataset import ReferVisualGenomeDataset

    _, info = generated
    kw = {"vis_processor": None, "text_processor": None}
    i = info["invrefcoco"]
    made = [
        InvReferCOCODataset(**kw, ann_path=i["ann_path"], vis_root=i["image_path"],
                            dataset=i["dataset"], splitBy=i["splitBy"]),
        GroundedDetailDataset(**kw, ann_path=info["flickr_grounded_caption"]["ann_path"],
                              vis_root=info["flickr_grounded_caption"]["image_path"]),
        LlavaConversationDataset(**kw, ann_path=info["llava_conversation"]["ann_path"],
                                 vis_root=info["llava_conversation"]["image_path"]),
        ReferVisualGenomeDataset(**kw, data_dir=info["refvg"]["data_dir"]),
        UnnaturalDataset(text_processor=None, ann_path=info["unnatural_instruction"]["ann_path"]),
    ]  # fmt: skip
    assert [len(d) for d in made] == [5, 3, 3, 6, 3]
    assert made[0][0]["instruction_input"].startswith("<Img><ImageHere></Img> [identify]")
