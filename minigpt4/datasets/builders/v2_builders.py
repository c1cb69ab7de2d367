"""Builders of MiniGPT-v2's finetune datasets, registered under the original's names.

Each reads its paths from ``datasets.<name>.build_info`` with the original's keys:
``image_path`` + ``ann_path`` (LLaVA, multi-task conversation, Flickr, TextCaps, OCR-VQA),
``ann_path`` alone (unnatural instructions), ``image_path`` + ``ann_path`` + ``dataset`` +
``splitBy`` (RefCOCO family), ``data_dir`` (Visual Genome), or LAVIS's
``annotations.train.storage`` + ``images.storage`` (COCO-VQA, OK-VQA, A-OKVQA, GQA, COCO
captions; images are read from ``<images.storage>/train``, as LAVIS's builder does).

``blip2_image_train`` here is the original HEAD's (a plain resize, no random crop: a crop would
move objects away from the boxes in grounding answers) unless the block sets ``random_crop``.
"""

from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from minigpt4.common.registry import registry
from minigpt4.common.utils import resolve_path
from minigpt4.datasets.builders.base_dataset_builder import BaseDatasetBuilder
from minigpt4.datasets.v2 import captions, conversations, flickr, referring, vqa


class V2Builder(BaseDatasetBuilder):
    """Reads the paths :meth:`make` needs from ``build_info`` and builds the train split."""

    def info(self, key: str, must_exist: bool = True) -> Any:
        """``build_info.<key>`` (a path resolved as config paths are); an error names the key."""
        value = self.config.get("build_info", {}).get(key)
        if value is None:
            raise ValueError(f"dataset '{self.name}': build_info.{key} is not set. "
                             f"{self.storage_hint(key)}")  # fmt: skip
        if not must_exist:
            return value
        path = resolve_path(str(value))
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"dataset '{self.name}': build_info.{key} = {path} does not exist. "
                f"{self.storage_hint(key)}"
            )
        return path

    def storage_hint(self, key: str = "ann_path") -> str:
        return (
            f"Set datasets.{self.name}.build_info.{key} in your config or pass --options "
            f"datasets.{self.name}.build_info.{key}=PATH (layouts: docs/minigptv2_training.md)"
        )

    @staticmethod
    def _build_proc_from_cfg(cfg: DictConfig | None) -> Any:
        if cfg is not None and cfg.get("name") == "blip2_image_train" and "random_crop" not in cfg:
            cfg = OmegaConf.merge(cfg, {"random_crop": False})
        return BaseDatasetBuilder._build_proc_from_cfg(cfg)

    def processors(self) -> dict[str, Any]:
        return {
            "vis_processor": self.vis_processors["train"],
            "text_processor": self.text_processors["train"],
        }

    def build(self) -> dict[str, Any]:
        return {"train": self.make()}

    def make(self) -> Any:
        raise NotImplementedError


class ImageAnnBuilder(V2Builder):
    """``image_path`` + ``ann_path``."""

    def make(self) -> Any:
        return self.train_dataset_cls(
            **self.processors(),
            vis_root=self.info("image_path"),
            ann_path=self.info("ann_path"),
            name=self.name,
        )


def _registered(name: str, cls: type, config: str, base: type = ImageAnnBuilder) -> type:
    """A builder class for ``cls`` registered as ``name`` with its default YAML."""
    builder = type(
        f"{cls.__name__}Builder_{name}",
        (base,),
        {"train_dataset_cls": cls, "DATASET_CONFIG_DICT": {"default": config}},
    )
    return registry.register_builder(name)(builder)


for _name, _cls, _config in (
    ("multitask_conversation", conversations.MultiTaskConversationDataset,
     "configs/datasets/multitask_conversation/default.yaml"),
    ("llava_detail", conversations.LlavaDetailDataset, "configs/datasets/llava/detail.yaml"),
    ("llava_reason", conversations.LlavaReasonDataset, "configs/datasets/llava/reason.yaml"),
    ("llava_conversation", conversations.LlavaConversationDataset,
     "configs/datasets/llava/conversation.yaml"),
    ("flickr_grounded_caption", flickr.GroundedDetailDataset,
     "configs/datasets/flickr/default.yaml"),
    ("flickr_CaptionToPhrase", flickr.CaptionToObjectDataset,
     "configs/datasets/flickr/caption_to_phrase.yaml"),
    ("flickr_ObjectToPhrase", flickr.PhraseToObjectDataset,
     "configs/datasets/flickr/object_to_phrase.yaml"),
    ("textcaps_caption", captions.TextCapDataset, "configs/datasets/textcaps/caption.yaml"),
    ("ocrvqa", vqa.OCRVQADataset, "configs/datasets/ocrvqa/ocrvqa.yaml"),
):  # fmt: skip
    _registered(_name, _cls, _config)


class UnnaturalInstructionBuilder(V2Builder):
    """Text only: ``ann_path``."""

    def make(self) -> Any:
        return conversations.UnnaturalDataset(
            self.text_processors["train"], self.info("ann_path"), self.name
        )


_registered(
    "unnatural_instruction",
    conversations.UnnaturalDataset,
    "configs/datasets/nlp/unnatural_instruction.yaml",
    UnnaturalInstructionBuilder,
)


class RefCOCOBuilder(V2Builder):
    """REFER layout under ``ann_path``, COCO train2014 images under ``image_path``."""

    def make(self) -> Any:
        return self.train_dataset_cls(
            **self.processors(),
            vis_root=self.info("image_path"),
            ann_path=self.info("ann_path"),
            dataset=self.info("dataset", must_exist=False),
            splitBy=self.info("splitBy", must_exist=False),
            name=self.name,
        )


for _name, _cls in (
    ("refcoco", referring.ReferCOCODataset),
    ("refcocop", referring.ReferCOCODataset),
    ("refcocog", referring.ReferCOCODataset),
    ("invrefcoco", referring.InvReferCOCODataset),
    ("invrefcocop", referring.InvReferCOCODataset),
    ("invrefcocog", referring.InvReferCOCODataset),
):
    _registered(_name, _cls, f"configs/datasets/coco_bbox/{_name}.yaml", RefCOCOBuilder)


class RefVisualGenomeBuilder(V2Builder):
    """Visual Genome's folder in ``data_dir``."""

    def make(self) -> Any:
        return referring.ReferVisualGenomeDataset(
            **self.processors(), data_dir=self.info("data_dir"), name=self.name
        )


_registered("refvg", referring.ReferVisualGenomeDataset, "configs/datasets/vg/ref.yaml",
            RefVisualGenomeBuilder)  # fmt: skip


class LavisBuilder(V2Builder):
    """LAVIS's ``annotations.train.storage`` (a file or a list) and ``images.storage``."""

    def make(self) -> Any:
        info = self.config.get("build_info", {})
        storage = info.get("annotations", {}).get("train", {}).get("storage")
        images = info.get("images", {}).get("storage")
        for key, value in (("annotations.train.storage", storage), ("images.storage", images)):
            if value is None:
                raise ValueError(f"dataset '{self.name}': build_info.{key} is not set. "
                                 f"{self.storage_hint(key)}")  # fmt: skip
        paths = list(storage) if isinstance(storage, (list, ListConfig)) else [storage]
        ann_paths = [resolve_path(str(p)) for p in paths]
        vis_root = os.path.join(resolve_path(str(images)), "train")
        if not os.path.isdir(vis_root):
            raise FileNotFoundError(
                f"dataset '{self.name}': image folder {vis_root} does not exist (images are read "
                f"from <build_info.images.storage>/train). {self.storage_hint('images.storage')}"
            )
        return self.train_dataset_cls(
            **self.processors(), vis_root=vis_root, ann_paths=ann_paths, name=self.name
        )


for _name, _cls, _config in (
    ("coco_vqa", vqa.COCOVQADataset, "configs/datasets/coco/defaults_vqa.yaml"),
    ("ok_vqa", vqa.COCOVQADataset, "configs/datasets/okvqa/defaults.yaml"),
    ("aok_vqa", vqa.AOKVQADataset, "configs/datasets/aokvqa/defaults.yaml"),
    ("gqa", vqa.GQADataset, "configs/datasets/gqa/balanced_val.yaml"),
    ("coco_caption", captions.COCOCapDataset, "configs/datasets/coco/caption.yaml"),
):
    _registered(_name, _cls, _config, LavisBuilder)
