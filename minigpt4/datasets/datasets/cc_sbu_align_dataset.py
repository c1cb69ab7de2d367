"""Stage-2 data: the ``cc_sbu_align`` folder (``filter_cap.json`` + ``image/{image_id}.jpg``)."""

from __future__ import annotations

import logging
from typing import Any

from minigpt4.datasets.datasets.caption_datasets import CaptionDataset
from minigpt4.models.prompt import IMAGE_PLACEHOLDER
from minigpt4.processors.image_io import ImageLoadError, load_image

logger = logging.getLogger(__name__)

# A corrupt image is replaced by the next one; this many failures in a row means the folder is
# broken, not one file.
MAX_CONSECUTIVE_BAD_IMAGES = 100


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
        for attempt in range(MAX_CONSECUTIVE_BAD_IMAGES):
            ann = self.annotation[(index + attempt) % len(self.annotation)]
            path = self.image_path(ann["image_id"])
            try:
                image = load_image(path)
            except ImageLoadError as err:
                logger.warning("Skipping unreadable image %s", err)
                continue
            sample = {
                "image": self.vis_processor(image),
                "text_input": ann["caption"],
                "image_id": self.img_ids[ann["image_id"]],
            }
            if self.has_instructions:
                sample["instruction_input"] = ann.get("instruction", "")
            return sample
        raise RuntimeError(
            f"{MAX_CONSECUTIVE_BAD_IMAGES} images in a row under {self.vis_root} could not be "
            "read; check the dataset folder"
        )
