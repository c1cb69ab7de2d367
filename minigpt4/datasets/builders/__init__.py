"""Dataset builders; importing this package registers ``laion``, ``cc_sbu``, ``cc_sbu_align``."""

from minigpt4.datasets.builders.base_dataset_builder import BaseDatasetBuilder
from minigpt4.datasets.builders.image_text_pair_builder import (
    CCSBUAlignBuilder,
    CCSBUBuilder,
    LaionBuilder,
)

__all__ = ["BaseDatasetBuilder", "CCSBUAlignBuilder", "CCSBUBuilder", "LaionBuilder"]
