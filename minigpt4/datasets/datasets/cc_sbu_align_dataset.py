"""Stage-2 data: the ``cc_sbu_align`` folder (``filter_cap.json`` + ``image/{image_id}.jpg``)."""

from __future__ import annotations

from typing import Any

from minigpt4.datasets.datasets.caption_datasets import CaptionDataset
from minigpt4.datasets.datasets.readable_images import SkipCounter, first_readable
from minigpt4.models.prompt import IMAGE_PLACEHOLDER


class CCSBUAlignDataset(CaptionDataset):
    """Returns ``{"image", "text_input", "image_id"}``; captions are used raw (no processor),
    as in the original.

    A record may also carry an ``instruction``: the whole prompt the LLM reads before the caption,
    template included, with ``<ImageHere>`` where the image goes (what the original's LLaMA-2 data
    passes as ``instruction_input``). When any record has one, every sample carries
    ``instruction_input`` ("" for the others, which get the model's random training prompt).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.has_instructions = False
        self.skips = SkipCounter("cc_sbu_align")
        for index, ann in enumerate(self.annotation):
            if "instruction" not in ann:
                continue
            prompt = ann["instruction"]
            if not isinstance(prompt, str) or IMAGE_PLACEHOLDER not in prompt:
                raise ValueError(
                    f"Annotation {index} in {self.ann_paths}: 'instruction' must be a string "
                    f"with {IMAGE_PLACEHOLDER} where the image goes, got {prompt!r}"
                )
            self.has_instructions = True

    def __getitem__(self, index: int) -> dict[str, Any]:
        ann, image = first_readable(
            self.annotation,
            index,
            lambda ann: self.image_path(ann["image_id"]),
            self.skips,
            where=str(self.vis_root),
        )
        sample = {
            "image": self.vis_processor(image),
            "text_input": ann["caption"],
            "image_id": self.img_ids[ann["image_id"]],
        }
        if self.has_instructions:
            sample["instruction_input"] = ann.get("instruction", "")
        return sample
