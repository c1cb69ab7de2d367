"""Stage-1 data: image-caption webdataset shards as img2dataset writes them.

Each sample of a shard is ``{key}.jpg`` plus ``{key}.json`` whose ``"caption"`` is the text.
The pipeline is the original's: shards drawn with replacement (``ResampledShards``, so the
stream never ends), samples shuffled in a 1000-sample buffer, decoded to RGB PIL images, the
image processor applied to the image and the text processor to the caption.

Unlike the original, a sample or shard that cannot be read is skipped with one logged warning
and no 0.5 s sleep, and a stream that keeps failing (every shard broken or empty) raises
instead of spinning forever. Shard draws are seeded from the process's torch seed (which
``train.py`` sets to ``run.seed + rank``) and the DataLoader worker id, so a run is repeatable.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import webdataset as wds

logger = logging.getLogger(__name__)

SHUFFLE_BUFFER = 1000
# Failures (unreadable samples, or shards giving no sample) tolerated in a row before the
# stream is declared broken.
MAX_CONSECUTIVE_FAILURES = 100


def describe(exn: Exception) -> str:
    """Where and why: webdataset's DecodingError carries url/key, the cause is chained."""
    where = " ".join(
        f"{attr}={getattr(exn, attr)}" for attr in ("url", "key") if getattr(exn, attr, None)
    )
    cause = exn.__cause__ if exn.__cause__ is not None else exn
    text = f"{type(cause).__name__}: {cause}"
    return f"{where} ({text})" if where else text


class StreamGuard:
    """Skips bad samples with a warning; raises once the stream yields nothing but failures."""

    def __init__(self, name: str, max_consecutive: int = MAX_CONSECUTIVE_FAILURES) -> None:
        self.name = name
        self.max_consecutive = max_consecutive
        self.failures = 0
        self.shards_without_sample = 0

    def handler(self, exn: Exception) -> bool:
        """webdataset exception handler: warn, count, continue (or give up)."""
        self.failures += 1
        if self.failures >= self.max_consecutive:
            raise RuntimeError(
                f"dataset '{self.name}': {self.failures} samples in a row could not be read "
                f"(last error: {describe(exn)}); check the shards"
            ) from exn
        logger.warning(
            "dataset '%s': skipping a sample that cannot be read: %s", self.name, describe(exn)
        )
        return True

    def count_shards(self, shards: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Pipeline stage on the shard stream: notice shards that produce no samples."""
        for shard in shards:
            self.shards_without_sample += 1
            if self.shards_without_sample > self.max_consecutive:
                raise RuntimeError(
                    f"dataset '{self.name}': {self.max_consecutive} shards in a row gave no "
                    f"sample (last: {shard.get('url')}); are the .tar files empty or broken?"
                )
            yield shard

    def passed(self, sample: Any) -> Any:
        """A sample made it through the whole pipeline: reset the counters."""
        self.failures = 0
        self.shards_without_sample = 0
        return sample


class ImageTextWebDataset:
    """Builds the webdataset ``DataPipeline``; the builder hands out ``.inner_dataset``."""

    def __init__(
        self,
        vis_processor: Callable,
        text_processor: Callable,
        location: str | Sequence[str],
        name: str = "webdataset",
        seed: int | None = None,
    ) -> None:
        self.vis_processor = vis_processor
        self.text_processor = text_processor
        self.guard = StreamGuard(name)
        # torch.initial_seed() is run.seed + rank after train.py's seeding; ResampledShards
        # mixes in the rank and DataLoader worker id itself.
        seed = torch.initial_seed() if seed is None else seed
        self.inner_dataset = wds.DataPipeline(
            wds.ResampledShards(location, seed=seed, deterministic=True),
            self.guard.count_shards,
            wds.tarfile_to_samples(handler=self.guard.handler),
            wds.shuffle(SHUFFLE_BUFFER, rng=random.Random(seed), handler=self.guard.handler),
            wds.decode("pilrgb", handler=self.guard.handler),
            wds.to_tuple("jpg", "json", handler=self.guard.handler),
            wds.map_tuple(self.vis_processor, handler=self.guard.handler),
            wds.map(self.to_dict, handler=self.guard.handler),
        )

    def to_dict(self, sample: tuple[Any, dict[str, Any]]) -> dict[str, Any]:
        image, meta = sample
        # A tuple in, a dict out: webdataset's map adds no "__key__" (collate cannot take None).
        out = {"image": image, "text_input": self.text_processor(meta["caption"])}
        return self.guard.passed(out)
