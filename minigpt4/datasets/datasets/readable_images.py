"""Map-style datasets skip an unreadable image: the next record is used, with a counted warning."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from minigpt4.processors.image_io import ImageLoadError, load_image

logger = logging.getLogger(__name__)

# A corrupt image is replaced by the next one; this many failures in a row means the folder is
# broken, not one file.
MAX_CONSECUTIVE_BAD_IMAGES = 100


class SkipCounter:
    """How many unreadable images a dataset has skipped (each skip is one warning)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.skipped = 0

    def skip(self, err: ImageLoadError) -> None:
        self.skipped += 1
        logger.warning(
            "Skipping unreadable image %s (dataset '%s': %d skipped so far)",
            err,
            self.name,
            self.skipped,
        )


def first_readable(
    records: Sequence[Any],
    index: int,
    image_path: Callable[[Any], str],
    counter: SkipCounter,
    where: str,
) -> tuple[Any, Image.Image]:
    """``(record, RGB image)`` of the first record from ``index`` on whose image reads.

    Raises when :data:`MAX_CONSECUTIVE_BAD_IMAGES` in a row cannot be read (``where`` names
    the folder in that message).
    """
    for attempt in range(MAX_CONSECUTIVE_BAD_IMAGES):
        record = records[(index + attempt) % len(records)]
        try:
            return record, load_image(image_path(record))
        except ImageLoadError as err:
            counter.skip(err)
    raise RuntimeError(
        f"{MAX_CONSECUTIVE_BAD_IMAGES} images in a row under {where} could not be read; "
        "check the dataset folder"
    )
