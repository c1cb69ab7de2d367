"""Dataset builders; importing this package registers ``laion``, ``cc_sbu``, ``cc_sbu_align``
and MiniGPT-v2's finetune datasets (:mod:`minigpt4.datasets.builders.v2_builders`)."""

import minigpt4.datasets.builders.v2_builders  # noqa: F401 (registers the v2 names)
from minigpt4.datasets.builders.base_dataset_builder import BaseDatasetBuilder
from minigpt4.datasets.builders.image_text_pair_builder import (
    CCSBUAlignBuilder,
    CCSBUBuilder,
    LaionBuilder,
)

__all__ = ["BaseDatasetBuilder", "CCSBUAlignBuilder", "CCSBUBuilder", "LaionBuilder"]
