"""Builders and datasets on generated data: webdataset shards and a cc_sbu_align folder."""

import json
import logging
import random
import tarfile

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader

import minigpt4  # noqa: F401  (registers builders and processors)
from minigpt4.common.registry import registry
from minigpt4.datasets.datasets.dataloader_utils import (
    IterLoader,
    MultiIterLoader,
    ResumableDistributedSampler,
)
from tests.train_helpers import processors, write_align_folder, write_shards


def builder(name, storage, **extra):
    cfg = OmegaConf.create({**processors(), "build_info": {"storage": storage}, **extra})
    return registry.get_builder_class(name)(cfg, name=name)


def take(pipeline, n):
    it = iter(pipeline)
    return [next(it) for _ in range(n)]


@pytest.mark.parametrize("name", ["laion", "cc_sbu"])
def test_shards_give_processed_image_and_json_caption(tmp_path, name):
    storage = write_shards(tmp_path / "shards", n_shards=3, per_shard=4)
    assert storage.endswith("{00000..00002}.tar")
    dataset = builder(name, storage).build_datasets()["train"]
    samples = take(dataset, 12)
    for sample in samples:
        assert set(sample) == {"image", "text_input"}
        assert sample["image"].shape == (3, 224, 224)
        # json "caption" "A RED square: on grey!" through blip_caption
        colour, shape = sample["text_input"].split(" ")[1:3]
        assert sample["text_input"] == f"a {colour} {shape} on grey"
    # resampled: the stream does not end after the 12 samples of the 3 shards
    assert len(take(dataset, 30)) == 30


def test_caption_comes_from_json_not_txt(tmp_path):
    import webdataset as wds

    (tmp_path / "s").mkdir()
    img = Image.new("RGB", (20, 20), (1, 2, 3))
    import io

    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    with wds.TarWriter(str(tmp_path / "s" / "00000.tar")) as sink:
        sink.write({"__key__": "k", "jpg": buf.getvalue(), "json": {"caption": "From JSON."},
                    "txt": "from txt"})  # fmt: skip
    dataset = builder("laion", str(tmp_path / "s" / "00000.tar")).build_datasets()["train"]
    assert take(dataset, 1)[0]["text_input"] == "from json"


def test_shard_draws_repeat_with_the_same_seed(tmp_path):
    from minigpt4.datasets.datasets.laion_dataset import LaionDataset
    from minigpt4.processors import BlipCaptionProcessor

    storage = write_shards(tmp_path / "shards", n_shards=4, per_shard=3)
    urls = [str(tmp_path / "shards" / f"{i:05d}.tar") for i in range(4)]

    def captions(seed):
        ds = LaionDataset(lambda im: 0, BlipCaptionProcessor(), urls, name="x", seed=seed)
        return [s["text_input"] for s in take(ds.inner_dataset, 20)]

    assert captions(7) == captions(7)
    assert storage  # the brace form is what configs use; the list form works too


def test_missing_storage_is_an_error_naming_dataset_and_path(tmp_path):
    missing = tmp_path / "nowhere" / "{00000..00009}.tar"
    with pytest.raises(FileNotFoundError) as err:
        builder("cc_sbu", str(missing)).build_datasets()
    message = str(err.value)
    assert "'cc_sbu'" in message and str(tmp_path / "nowhere") in message
    assert "datasets.cc_sbu.build_info.storage" in message


def test_some_missing_shards_are_skipped_with_one_warning(tmp_path, caplog):
    write_shards(tmp_path / "s", n_shards=2, per_shard=2)
    storage = str(tmp_path / "s" / "{00000..00004}.tar")
    b = builder("laion", storage)
    with caplog.at_level(logging.WARNING):
        urls = b.shard_urls()
    assert urls == [str(tmp_path / "s" / f"{i:05d}.tar") for i in range(2)]
    warnings = [r for r in caplog.records if "shards do not exist" in r.getMessage()]
    assert len(warnings) == 1 and "3 of 5" in warnings[0].getMessage()


def test_empty_storage_setting_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="build_info.storage is not set"):
        builder("laion", "").build_datasets()


def test_corrupt_sample_skipped_with_one_warning(tmp_path, caplog):
    storage = write_shards(tmp_path / "s", n_shards=1, per_shard=5, corrupt=((0, 2),))
    torch.manual_seed(0)  # the shard and shuffle RNGs derive from it
    dataset = builder("laion", storage).build_datasets()["train"]
    with caplog.at_level(logging.WARNING):
        # decode runs after the shuffle buffer: about 1 in 5 draws is the corrupt sample
        samples = take(dataset, 30)
    assert all(s["image"].shape == (3, 224, 224) for s in samples)
    skipped = [r.getMessage() for r in caplog.records if "skipping a sample" in r.getMessage()]
    # One warning per corrupt read and nothing else: every message names the bad sample.
    assert skipped
    assert all("'laion'" in m and "key=000000002" in m and "00000.tar" in m for m in skipped)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.getMessage()
                not in skipped]  # fmt: skip


def test_all_corrupt_raises_instead_of_spinning(tmp_path):
    corrupt = tuple((0, j) for j in range(4))
    storage = write_shards(tmp_path / "s", n_shards=1, per_shard=4, corrupt=corrupt)
    dataset = builder("laion", storage).build_datasets()["train"]
    logging.getLogger("minigpt4.datasets").setLevel(logging.ERROR)  # keep the output short
    try:
        with pytest.raises(RuntimeError, match="in a row"):
            take(dataset, 1)
    finally:
        logging.getLogger("minigpt4.datasets").setLevel(logging.NOTSET)


def test_empty_shards_raise_instead_of_spinning(tmp_path):
    (tmp_path / "s").mkdir()
    for i in range(2):
        with tarfile.open(tmp_path / "s" / f"{i:05d}.tar", "w"):
            pass
    dataset = builder("cc_sbu", str(tmp_path / "s" / "{00000..00001}.tar")).build_datasets()
    with pytest.raises(RuntimeError, match="gave no sample"):
        take(dataset["train"], 1)


def test_not_a_tar_raises_instead_of_spinning(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "00000.tar").write_bytes(b"this is not a tar file" * 10)
    dataset = builder("laion", str(tmp_path / "s" / "00000.tar")).build_datasets()["train"]
    logging.getLogger("minigpt4.datasets").setLevel(logging.ERROR)
    try:
        with pytest.raises(RuntimeError, match="in a row"):
            take(dataset, 1)
    finally:
        logging.getLogger("minigpt4.datasets").setLevel(logging.NOTSET)


# --- cc_sbu_align ---------------------------------------------------------------------------


def test_cc_sbu_align_folder(tmp_path):
    folder = write_align_folder(tmp_path / "align", n=5)
    dataset = builder("cc_sbu_align", str(folder)).build_datasets()["train"]
    annotations = json.loads((folder / "filter_cap.json").read_text())["annotations"]
    assert len(dataset) == 5
    for index in range(5):
        sample = dataset[index]
        assert sample["image"].shape == (3, 224, 224)
        assert sample["text_input"] == annotations[index]["caption"]  # raw, no blip_caption
        assert sample["image_id"] == index
    assert [a["instance_id"] for a in dataset.annotation] == [str(i) for i in range(5)]
    batch = dataset.collater([dataset[0], dataset[1]])
    assert batch["image"].shape == (2, 3, 224, 224) and len(batch["text_input"]) == 2


def test_cc_sbu_align_image_id_is_index_of_unique_ids(tmp_path):
    folder = write_align_folder(tmp_path / "align", n=3)
    ann = {"annotations": [{"image_id": "3", "caption": "x"}, {"image_id": "2", "caption": "y"},
                           {"image_id": "3", "caption": "z"}]}  # fmt: skip
    (folder / "filter_cap.json").write_text(json.dumps(ann))
    dataset = builder("cc_sbu_align", str(folder)).build_datasets()["train"]
    assert [dataset[i]["image_id"] for i in range(3)] == [0, 1, 0]


def test_cc_sbu_align_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="'cc_sbu_align'.*does not exist"):
        builder("cc_sbu_align", str(tmp_path / "missing")).build_datasets()
    folder = write_align_folder(tmp_path / "align", n=3)
    (folder / "image" / "3.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 3 annotated images are missing.*3\.jpg"):
        builder("cc_sbu_align", str(folder)).build_datasets()
    (folder / "filter_cap.json").unlink()
    with pytest.raises(FileNotFoundError, match="filter_cap.json"):
        builder("cc_sbu_align", str(folder)).build_datasets()


def test_cc_sbu_align_records_with_their_own_instruction(tmp_path):
    folder = write_align_folder(tmp_path / "align", n=3)
    prompt = "###Human: <Img><ImageHere></Img> Is it red? ###Assistant: "
    ann = {"annotations": [{"image_id": "2", "caption": "a red square"},
                           {"image_id": "2", "caption": "Yes", "instruction": prompt}]}  # fmt: skip
    (folder / "filter_cap.json").write_text(json.dumps(ann))
    dataset = builder("cc_sbu_align", str(folder)).build_datasets()["train"]
    batch = dataset.collater([dataset[0], dataset[1]])
    assert batch["instruction_input"] == ["", prompt]  # "": the model's random prompt
    assert batch["text_input"] == ["a red square", "Yes"]
    ann["annotations"][1]["instruction"] = "Is it red?"
    (folder / "filter_cap.json").write_text(json.dumps(ann))
    with pytest.raises(ValueError, match=r"Annotation 1 in .*filter_cap.json.*<ImageHere>"):
        builder("cc_sbu_align", str(folder)).build_datasets()


def test_cc_sbu_align_without_instructions_has_no_instruction_input(tmp_path):
    folder = write_align_folder(tmp_path / "align", n=2)
    dataset = builder("cc_sbu_align", str(folder)).build_datasets()["train"]
    assert "instruction_input" not in dataset[0]


def test_cc_sbu_align_corrupt_image_replaced_with_warning(tmp_path, caplog):
    folder = write_align_folder(tmp_path / "align", n=3)
    (folder / "image" / "3.jpg").write_bytes(b"garbage")
    dataset = builder("cc_sbu_align", str(folder)).build_datasets()["train"]
    with caplog.at_level(logging.WARNING):
        sample = dataset[1]
    assert sample["text_input"] == dataset.annotation[2]["caption"]  # the next one
    assert len([r for r in caplog.records if "3.jpg" in r.getMessage()]) == 1


# --- loaders ---------------------------------------------------------------------------------


class Numbers(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i


def test_multi_iter_loader_picks_by_sample_ratio():
    a, b = iter(["a"] * 1000), iter(["b"] * 1000)
    loader = MultiIterLoader([a, b], ratios=[115, 14])
    random.seed(3)
    got = [next(loader) for _ in range(500)]
    random.seed(3)
    expected = [["a", "b"][random.choices(range(2), [115 / 129, 14 / 129], k=1)[0]]
                for _ in range(500)]  # fmt: skip
    assert got == expected
    assert 0.85 < got.count("a") / 500 < 0.93


def test_iter_loader_restarts_and_reshuffles_per_pass():
    sampler = ResumableDistributedSampler(Numbers(6), num_replicas=1, rank=0, seed=1)
    loader = IterLoader(DataLoader(Numbers(6), batch_size=2, sampler=sampler, drop_last=True))
    first = [next(loader).tolist() for _ in range(3)]
    second = [next(loader).tolist() for _ in range(3)]
    assert sorted(sum(first, [])) == list(range(6)) == sorted(sum(second, []))
    assert first != second and loader.epoch == 1


@pytest.mark.parametrize("stop", [0, 2, 3, 5])
def test_iter_loader_resume_continues_the_same_sequence(stop):
    def make(rank):
        sampler = ResumableDistributedSampler(Numbers(12), num_replicas=2, rank=rank, seed=5)
        dl = DataLoader(Numbers(12), batch_size=2, sampler=sampler, drop_last=True)
        return IterLoader(dl, use_distributed=True)

    reference = make(0)
    sequence = [next(reference).tolist() for _ in range(8)]
    interrupted = make(0)
    for _ in range(stop):
        next(interrupted)
    resumed = make(0)
    resumed.load_state_dict(interrupted.state_dict())
    assert [next(resumed).tolist() for _ in range(8 - stop)] == sequence[stop:]
    # ranks see disjoint halves of every pass
    other = make(1)
    assert not set(sum(sequence[:3], [])) & set(sum([next(other).tolist() for _ in range(3)], []))


def test_loaders_with_worker_processes(tmp_path):
    """Both dataset kinds work in DataLoader workers (the shipped configs use 4) and pickle
    (needed where workers are spawned, e.g. macOS)."""
    import pickle

    storage = write_shards(tmp_path / "s", n_shards=2, per_shard=3)
    stream = builder("laion", storage).build_datasets()["train"]
    align = builder("cc_sbu_align", str(write_align_folder(tmp_path / "a", n=4)))
    folder = align.build_datasets()["train"]
    for dataset, kwargs in ((stream, {}), (folder, {"collate_fn": folder.collater})):
        pickle.loads(pickle.dumps(dataset))
        loader = DataLoader(dataset, batch_size=2, num_workers=2, **kwargs)
        batch = next(iter(loader))
        assert batch["image"].shape == (2, 3, 224, 224) and len(batch["text_input"]) == 2


def test_storage_as_list_of_patterns(tmp_path):
    write_shards(tmp_path / "a", n_shards=2, per_shard=1)
    write_shards(tmp_path / "b", n_shards=1, per_shard=1)
    patterns = [str(tmp_path / "a" / "{00000..00001}.tar"), str(tmp_path / "b" / "00000.tar")]
    urls = builder("laion", patterns).shard_urls()
    assert urls == [str(tmp_path / "a" / "00000.tar"), str(tmp_path / "a" / "00001.tar"),
                    str(tmp_path / "b" / "00000.tar")]  # fmt: skip
    both = builder("laion", "::".join(patterns)).shard_urls()
    assert both == urls
