"""Builders ``laion`` and ``cc_sbu`` (webdataset shards) and ``cc_sbu_align`` (a folder)."""

from __future__ import annotations

import logging
import os
from typing import Any

from webdataset.shardlists import expand_urls

from minigpt4.common.registry import registry
from minigpt4.common.utils import resolve_path
from minigpt4.datasets.builders.base_dataset_builder import BaseDatasetBuilder
from minigpt4.datasets.datasets.cc_sbu_align_dataset import CCSBUAlignDataset
from minigpt4.datasets.datasets.cc_sbu_dataset import CCSBUDataset
from minigpt4.datasets.datasets.laion_dataset import LaionDataset

logger = logging.getLogger(__name__)

# How many missing files to name in a message.
MAX_LISTED = 5


def _is_remote(url: str) -> bool:
    return "://" in url or url.startswith("pipe:")


class ShardsBuilder(BaseDatasetBuilder):
    """Webdataset shards named by a brace pattern in ``build_info.storage``."""

    def shard_urls(self) -> list[str]:
        """Expand ``storage`` (``.../{00000..01255}.tar``, ``a.tar::b.tar`` or a list of such
        patterns) to the existing shards.

        Missing local shards are dropped with one warning (img2dataset may skip a shard);
        none at all is an error that names the dataset and the path.
        """
        storage = self.config.get("build_info", {}).get("storage")
        if not storage:
            raise ValueError(
                f"dataset '{self.name}': build_info.storage is not set. {self.storage_hint()}"
            )
        patterns = [storage] if isinstance(storage, str) else list(storage)  # a YAML list works too
        urls = [url for pattern in patterns for url in expand_urls(str(pattern))]
        shards = [url if _is_remote(url) else resolve_path(url) for url in urls]
        missing = [s for s in shards if not _is_remote(s) and not os.path.isfile(s)]
        if len(missing) == len(shards):
            raise FileNotFoundError(
                f"dataset '{self.name}': no shard found for storage '{storage}' "
                f"(looked for {len(shards)} file(s), e.g. {missing[0]}). {self.storage_hint()}"
            )
        if missing:
            logger.warning(
                "dataset '%s': %d of %d shards do not exist and are skipped, e.g. %s",
                self.name,
                len(missing),
                len(shards),
                ", ".join(missing[:MAX_LISTED]),
            )
        missing_set = set(missing)
        return [s for s in shards if s not in missing_set]

    def build(self) -> dict[str, Any]:
        dataset = self.train_dataset_cls(
            vis_processor=self.vis_processors["train"],
            text_processor=self.text_processors["train"],
            location=self.shard_urls(),
            name=self.name,
        )
        return {"train": dataset.inner_dataset}


@registry.register_builder("cc_sbu")
class CCSBUBuilder(ShardsBuilder):
    train_dataset_cls = CCSBUDataset
    DATASET_CONFIG_DICT = {"default": "configs/datasets/cc_sbu/defaults.yaml"}


@registry.register_builder("laion")
class LaionBuilder(ShardsBuilder):
    train_dataset_cls = LaionDataset
    DATASET_CONFIG_DICT = {"default": "configs/datasets/laion/defaults.yaml"}


@registry.register_builder("cc_sbu_align")
class CCSBUAlignBuilder(BaseDatasetBuilder):
    """``storage/filter_cap.json`` + ``storage/image/{image_id}.jpg``, map-style."""

    train_dataset_cls = CCSBUAlignDataset
    DATASET_CONFIG_DICT = {"default": "configs/datasets/cc_sbu/align.yaml"}

    def build(self) -> dict[str, Any]:
        storage = self.config.get("build_info", {}).get("storage")
        if not storage:
            raise ValueError(
                f"dataset '{self.name}': build_info.storage is not set. {self.storage_hint()}"
            )
        storage_path = resolve_path(str(storage))
        # The original only warned here and crashed later, mid-training.
        if not os.path.isdir(storage_path):
            raise FileNotFoundError(
                f"dataset '{self.name}': storage path {storage_path} does not exist. "
                f"{self.storage_hint()}"
            )
        ann_path = os.path.join(storage_path, "filter_cap.json")
        vis_root = os.path.join(storage_path, "image")
        for needed in (ann_path, vis_root):
            if not os.path.exists(needed):
                raise FileNotFoundError(
                    f"dataset '{self.name}': {needed} does not exist; the folder must hold "
                    "filter_cap.json and image/{image_id}.jpg"
                )
        dataset = self.train_dataset_cls(
            vis_processor=self.vis_processors["train"],
            text_processor=self.text_processors["train"],
            vis_root=vis_root,
            ann_paths=[ann_path],
        )
        if len(dataset) == 0:
            raise ValueError(f"dataset '{self.name}': {ann_path} holds no annotations")
        missing = [
            path
            for path in (dataset.image_path(ann["image_id"]) for ann in dataset.annotation)
            if not os.path.isfile(path)
        ]
        if missing:
            raise FileNotFoundError(
                f"dataset '{self.name}': {len(missing)} of {len(dataset)} annotated images are "
                f"missing, e.g. {', '.join(missing[:MAX_LISTED])}"
            )
        return {"train": dataset}
