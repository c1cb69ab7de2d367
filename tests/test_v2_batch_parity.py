"""The finetune recipe's batches against the original (set V): records written in the original's
file layouts, built by the finetune config's dataset blocks, collated and stepped as the runner
does, give set V's loss and gradients for each kind of batch; a batch mixing rows of several
kinds gives the loss and gradients of the union of its rows.

Set V (tests/fixtures/reference/minigptv2/) holds, per kind (``caption``, ``grounding``,
``vqa``, ``conversation``), the text the original's datasets would feed, its two images and what
its training forward computed: the labelled tokens' losses (``token_nll``), the batch loss, the
per-row ``reduction="none"`` loss and the gradients of llama_proj and layer 0's LoRA. The
records below are written so that the project's datasets produce exactly that text (asserted);
the expected values of the mixed batch are computed from set V's per-token data alone.

Images: the original's HEAD ``blip2_image_train`` is a plain resize, equal to ``blip2_image_eval``
(set V's ``train_processor_equals_eval_processor``), and so is the project's for the v2 datasets:
the finetune config's blocks are used as they are.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import default_collate

import minigpt4  # noqa: F401 (registers the builders)
from minigpt4.common.registry import registry
from minigpt4.datasets.data_utils import prepare_sample
from minigpt4.datasets.datasets.dataloader_utils import MultiIterLoader
from minigpt4.tasks.base_task import BaseTask
from tests.model_fixtures import assert_close, load_v2_reference, v2_model

CONFIG = Path(__file__).resolve().parents[1] / "train_configs" / "minigptv2_finetune.yaml"
# Which dataset of the finetune config makes each kind of set V's batches.
DATASET_OF = {
    "caption": "coco_caption",
    "grounding": "flickr_grounded_caption",
    "vqa": "coco_vqa",
    "conversation": "multitask_conversation",
}
INSTRUCTION_KINDS = ("caption", "grounding", "vqa")
SEEDS_TRIED = 500  # template draws: the rarest template (1 of 17) turns up well within this
TEXT_KEYS = ("instruction_input", "answer", "conv_q", "conv_a", "connect_sym")


# --- records in the original's layouts, whose text is set V's --------------------------------


def _write_images(folder: Path, names: list[str], ref: dict) -> None:
    """Set V's two images, losslessly (PNG content; PIL reads it whatever the file's suffix)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(names, ref["raw_images_uint8"]):
        Image.fromarray(np.asarray(array)).save(folder / name, format="PNG")


def _dump(path: Path, content) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=1))
    return str(path)


def write_caption(root: Path, ref: dict) -> dict:
    """``coco_karpathy_train.json``; the captions as written before ``blip_caption``."""
    names = [f"COCO_train2014_{i:012}.jpg" for i in (11, 12)]
    _write_images(root / "coco" / "train", names, ref)
    raw = ["A red rectangle and a blue circle, on a white background.",
           "A colourful gradient image from GREEN to red!"]  # fmt: skip
    records = [{"image": f"train2014/{n}", "caption": c, "image_id": f"coco_{i}"}
               for i, (n, c) in enumerate(zip(names, raw))]  # fmt: skip
    ann = _dump(root / "coco_caption" / "coco_karpathy_train.json", records)
    return {"annotations": {"train": {"storage": ann}}, "images": {"storage": str(root / "coco")}}


def write_grounding(root: Path, ref: dict) -> dict:
    """Flickr30k Entities' ``groundedcaption.json``: the grounded captions are used raw."""
    folder = root / "filtered_flickr"
    _write_images(folder / "images", ["36979.jpg", "36980.jpg"], ref)
    answers = ref["train"]["grounding"]["samples_text"]["answer"]
    records = [{"image_id": str(36979 + i), "grounded_caption": a} for i, a in enumerate(answers)]
    ann = _dump(folder / "groundedcaption.json", records)
    return {"image_path": str(folder / "images"), "ann_path": ann}


def write_vqa(root: Path, ref: dict) -> dict:
    """LAVIS's ``vqa_train.json``: question and answers through ``blip_caption``."""
    names = [f"COCO_train2014_{i:012}.jpg" for i in (21, 22)]
    _write_images(root / "coco" / "train", names, ref)
    questions = {"What color is the Square?": ["Red", "red"],
                 "How many shapes are there?": ["two", "Two."]}  # fmt: skip
    records = [
        {"question_id": i, "image": f"train2014/{name}", "question": q, "answer": answers}
        for i, (name, (q, answers)) in enumerate(zip(names, questions.items()))
    ]
    ann = _dump(root / "vqav2" / "vqa_train.json", records)
    return {"annotations": {"train": {"storage": [ann]}}, "images": {"storage": str(root / "coco")}}


def write_conversation(root: Path, ref: dict) -> dict:
    """``multi_task_conversation.json`` (LLaVA's layout): every turn, raw."""
    ids = ["000000000031", "000000000032"]
    _write_images(root / "coco" / "images", [f"COCO_train2014_{i}.jpg" for i in ids], ref)
    turns = [
        ["<image>\nWhat is in the picture?", "A red square and a blue circle.",
         "Thanks! Is there a garden?", "No, there is no garden."],
        ["Describe this image in detail.\n<image>",
         "The image shows a cat sitting on a red mat next to a wooden door, price 5$$ only."],
    ]  # fmt: skip
    records = [
        {"id": i, "conversations": [{"from": ("human", "gpt")[k % 2], "value": v}
                                    for k, v in enumerate(t)]}
        for i, t in zip(ids, turns)
    ]  # fmt: skip
    ann = _dump(root / "multitask_conversation" / "multi_task_conversation.json", records)
    return {"image_path": str(root / "coco" / "images"), "ann_path": ann}


WRITERS = {
    "caption": write_caption,
    "grounding": write_grounding,
    "vqa": write_vqa,
    "conversation": write_conversation,
}


def build_dataset(name: str, build_info: dict):
    """The finetune config's block of ``name`` (processors, batch size, ratio) on these files."""
    block = OmegaConf.load(CONFIG).datasets[name]
    cfg = OmegaConf.merge(block, {"build_info": build_info})
    return registry.get_builder_class(name)(cfg, name=name).build_datasets()["train"]


def sample_with_text(dataset, index: int, expected: dict) -> dict:
    """``dataset[index]`` under the first seed whose template draws give ``expected``'s text."""
    for seed in range(SEEDS_TRIED):
        random.seed(seed)
        sample = dataset[index]
        if {k: sample[k] for k in expected} == expected:
            return sample
    raise AssertionError(f"{dataset.name}[{index}] never gives {expected}")


def expected_row(ref: dict, kind: str, row: int) -> dict:
    text = ref["train"][kind]["samples_text"]
    return {k: text[k][row] for k in TEXT_KEYS if k in text}


@pytest.fixture(scope="module")
def ref():
    return load_v2_reference()


@pytest.fixture(scope="module")
def datasets(ref, tmp_path_factory):
    root = tmp_path_factory.mktemp("v2batch")
    return {kind: build_dataset(DATASET_OF[kind], WRITERS[kind](root, ref)) for kind in WRITERS}


@pytest.fixture(scope="module")
def rows(ref, datasets):
    """Per kind, set V's two rows as the datasets give them (image processed, text asserted)."""
    return {
        kind: [sample_with_text(dataset, i, expected_row(ref, kind, i)) for i in range(2)]
        for kind, dataset in datasets.items()
    }


@pytest.fixture(scope="module")
def model(ref):
    # Set V's numbers are dropout-free (eval mode, autograd on).
    return v2_model("finetune", ref["tiny_hparams"]).eval()


def runner_loss(model, batch: dict) -> torch.Tensor:
    """What the runner's step computes: the batch on the device, the step's keys added, the
    task's ``train_step``."""
    samples = prepare_sample(dict(batch), torch.device("cpu"))
    samples.update({"epoch": 0, "num_iters_per_epoch": 1, "iters": 0})
    return BaseTask().train_step(model=model, samples=samples)


def gradients(model) -> dict[str, torch.Tensor]:
    """The gradients set V holds: llama_proj's and layer 0's LoRA (q_proj/v_proj, A and B)."""
    grads = {"weight": model.llama_proj.weight.grad, "bias": model.llama_proj.bias.grad}
    attn = model.llama_model.base_model.model.model.layers[0].self_attn
    for proj, part in itertools.product(("q_proj", "v_proj"), ("lora_A", "lora_B")):
        grads[f"{proj}.{part}"] = getattr(getattr(attn, proj), part)["default"].weight.grad
    return {k: v.detach().clone() for k, v in grads.items()}


def reference_gradients(expected: dict) -> dict[str, torch.Tensor]:
    grads = {"weight": expected["grad_llama_proj_weight"], "bias": expected["grad_llama_proj_bias"]}
    return {**grads, **expected["grad_lora_layer0"]}


def loss_and_gradients(model, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = runner_loss(model, batch)
    loss.backward()
    grads = gradients(model)
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


# --- each kind ---------------------------------------------------------------------------------


def test_the_datasets_give_set_vs_images(ref, rows):
    check = ref["images_eval_processed_check"]
    for kind, pair in rows.items():
        images = torch.stack([row["image"] for row in pair])
        assert list(images.shape) == check["shape"], kind
        assert_close(images[:, :, ::8, ::8], check["strided"], f"{kind}: images")


@pytest.mark.parametrize("kind", list(DATASET_OF))
def test_a_batch_of_each_kind_gives_set_vs_loss_and_gradients(ref, datasets, rows, model, kind):
    expected = ref["train"][kind]
    batch = datasets[kind].collater(rows[kind])
    assert {k: batch[k] for k in expected["samples_text"]} == expected["samples_text"]
    loss, grads = loss_and_gradients(model, batch)
    assert_close(loss, expected["loss"], f"{kind}: loss")
    for name, grad in reference_gradients(expected).items():
        assert_close(grads[name], grad, f"{kind}: grad {name}")
    with torch.no_grad():
        per_row = model(batch, reduction="none")["loss"]
    assert_close(per_row, expected["loss_reduction_none"], f"{kind}: reduction none")


def test_the_finetune_mix_steps_each_kind_at_set_vs_loss(ref, datasets, rows, model):
    """The runner's mix: per iteration one dataset's batch, drawn by the config's
    ``sample_ratio``s (``MultiIterLoader``); every step's loss is set V's for its kind."""
    config = OmegaConf.load(CONFIG).datasets
    batches = {kind: datasets[kind].collater(rows[kind]) for kind in DATASET_OF}
    kind_of = {id(batch): kind for kind, batch in batches.items()}
    mix = MultiIterLoader(
        [itertools.repeat(batch) for batch in batches.values()],
        ratios=[config[DATASET_OF[kind]].sample_ratio for kind in batches],
    )
    random.seed(0)
    drawn = []
    for _ in range(12):
        batch = next(mix)
        drawn.append(kind_of[id(batch)])
        with torch.no_grad():
            loss = runner_loss(model, batch)
        assert_close(loss, ref["train"][drawn[-1]]["loss"], f"mix, step {len(drawn)}: {drawn[-1]}")
    assert len(set(drawn)) >= 3, drawn


# --- a batch of several kinds: the union of its rows --------------------------------------------


def shared_key_collate(samples: list[dict]) -> dict:
    """Rows of several datasets in one batch: the keys every row has, collated (what the
    original's LAVIS ``ConcatDataset.collater`` does)."""
    shared = set.intersection(*(set(s) for s in samples))
    return default_collate([{k: s[k] for k in shared} for s in samples])


def labelled_tokens(expected: dict) -> int:
    return len(expected["logits_checksum"]["token_nll"])


def row_length(expected: dict) -> int:
    """T of set V's batch: BOS, the longest prompt (image included), the longest answer."""
    length = 1 + max(expected["input_lens"]) + expected["regress_atts"].shape[1]
    assert length == expected["targets"].shape[1]
    return length


def answer_lengths(kinds: list[dict]) -> list[int]:
    return [e["regress_atts"].shape[1] for e in kinds]


def test_a_batch_mixing_kinds_gives_the_union_of_its_rows(ref, rows, model):
    """Caption, grounding and vqa rows in one batch (a conversation row cannot join them, in the
    original as here: the batch takes the conversation layout when any row has ``conv_q``).
    Expected from set V alone: the loss is the mean of every labelled token's loss, the
    gradient each kind's gradient weighted by its labelled tokens, and a row's
    ``reduction="none"`` loss its token losses' sum over the mixed batch's length - 1."""
    kinds = [ref["train"][k] for k in INSTRUCTION_KINDS]
    counts = torch.tensor([labelled_tokens(e) for e in kinds], dtype=torch.float64)
    all_nll = torch.cat([e["logits_checksum"]["token_nll"].double() for e in kinds])
    batch = shared_key_collate([row for k in INSTRUCTION_KINDS for row in rows[k]])
    loss, grads = loss_and_gradients(model, batch)
    assert_close(loss, all_nll.mean(), "mixed: loss")
    for name in grads:
        weighted = sum(n * reference_gradients(e)[name].double() for n, e in zip(counts, kinds))
        assert_close(grads[name], weighted / counts.sum(), f"mixed: grad {name}")
    length = 1 + max(max(e["input_lens"]) for e in kinds) + max(answer_lengths(kinds))
    row_sums = torch.cat([e["loss_reduction_none"].double() * (row_length(e) - 1) for e in kinds])
    with torch.no_grad():
        per_row = model(batch, reduction="none")["loss"]
    assert_close(per_row, row_sums / (length - 1), "mixed: reduction none")
