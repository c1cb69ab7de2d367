"""Stage-1 data: image-caption webdataset shards as img2dataset writes them.

Each sample of a shard is ``{key}.jpg`` (or ``.png``/``.webp``) plus ``{key}.json`` whose
``"caption"`` is the text. The stream is the original's: shards drawn with replacement (so it
never ends), samples shuffled in a 1000-sample buffer, decoded to RGB (through the shared
:func:`~minigpt4.processors.image_io.load_image`, so 16-bit images are scaled, not clipped),
the image processor applied to the image and the text processor to the caption.

Unlike the original, the stream is a pure function of its seed (``run.seed + rank``, set by
``train.py``), the dataset's name, the training epoch and the DataLoader worker: shard draws,
shuffle and each sample's random crop are seeded from those and the sample's position, never
from time, pid or a worker's RNG state. :meth:`ImageTextStream.positioned_samples` can start
part-way, reading the tar bytes of the samples it skips but decoding none of them; that is how
a resumed run continues with exactly the samples an uninterrupted run would have seen.

A sample or shard that cannot be read is skipped with one logged warning and no 0.5 s sleep,
and a stream that keeps failing (every shard broken or empty) raises instead of spinning.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.shardlists import expand_urls

from minigpt4.datasets.sample_seeds import mix_seed, seeded_torch
from minigpt4.processors.image_io import load_image

logger = logging.getLogger(__name__)

SHUFFLE_BUFFER = 1000
# Failures (unreadable samples, or shards giving no sample) tolerated in a row before the
# stream is declared broken.
MAX_CONSECUTIVE_FAILURES = 100
# Where img2dataset puts the image (its encode_format decides the extension).
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


def describe(exn: Exception) -> str:
    """Where and why: webdataset's errors carry url/key, the cause may be chained."""
    where = " ".join(
        f"{attr}={getattr(exn, attr)}" for attr in ("url", "key") if getattr(exn, attr, None)
    )
    cause = exn.__cause__ if exn.__cause__ is not None else exn
    text = f"{type(cause).__name__}: {cause}"
    return f"{where} ({text})" if where else text


class SampleError(ValueError):
    """A sample of a shard that cannot be used (``url`` and ``key`` name it)."""

    def __init__(self, url: str, key: str, cause: Exception) -> None:
        super().__init__(str(cause))
        self.url, self.key = url, key
        self.__cause__ = cause


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

    def sample_seen(self) -> None:
        """A sample came out of the shards (skipped unread on a resume): they are not empty."""
        self.shards_without_sample = 0

    def passed(self) -> None:
        """A sample made it through the whole pipeline: reset the counters."""
        self.failures = 0
        self.shards_without_sample = 0


def worker_slot() -> tuple[int, int]:
    """(this DataLoader worker's id, number of workers); (0, 1) in the main process."""
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class ImageTextStream(IterableDataset):
    """The endless sample stream of one rank (what the builders hand to the runner)."""

    def __init__(
        self,
        urls: Sequence[str],
        seed: int,
        name: str,
        vis_processor: Callable,
        text_processor: Callable,
    ) -> None:
        super().__init__()
        if not urls:
            raise ValueError(f"dataset '{name}': no shards to read")
        self.urls = list(urls)
        self.seed = int(seed)
        self.name = name
        self.vis_processor = vis_processor
        self.text_processor = text_processor
        self.guard = StreamGuard(name)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, _ = worker_slot()
        for _, sample in self.positioned_samples(epoch=0, worker=worker):
            yield sample

    def positioned_samples(
        self, epoch: int, worker: int, skip: int = 0
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(position, sample)`` of stream ``(epoch, worker)``, from position ``skip`` on.

        The position counts every sample that came out of the shuffle buffer, readable or
        not; the first ``skip`` of them are passed over without being decoded.
        """
        stream_seed = mix_seed(self.seed, self.name, epoch, worker)
        for position, raw in enumerate(self._shuffled(stream_seed)):
            if position < skip:
                self.guard.sample_seen()
                continue
            sample = self._process(raw, mix_seed(stream_seed, position))
            if sample is not None:
                yield position, sample

    def _shuffled(self, stream_seed: int) -> Iterator[dict[str, Any]]:
        shard_rng = random.Random(mix_seed(stream_seed, "shards"))
        shards = (dict(url=shard_rng.choice(self.urls)) for _ in itertools.count())
        samples = wds.tarfile_to_samples(handler=self.guard.handler)(
            self.guard.count_shards(shards)
        )
        return wds.shuffle(SHUFFLE_BUFFER, rng=random.Random(mix_seed(stream_seed, "shuffle")))(
            samples
        )

    def _process(self, raw: dict[str, Any], sample_seed: int) -> dict[str, Any] | None:
        """Decode and process one sample; None (after a warning) when it cannot be read."""
        url, key = raw.get("__url__", "?"), raw.get("__key__", "?")
        try:
            image_key = next((k for k in IMAGE_KEYS if k in raw), None)
            if image_key is None or "json" not in raw:
                wanted = "/".join(IMAGE_KEYS)
                raise KeyError(f"needs an image ({wanted}) and a json, has {sorted(raw)}")
            image = load_image(io.BytesIO(raw[image_key]), name=f"{url} {key}.{image_key}")
            caption = json.loads(raw["json"])["caption"]
            with seeded_torch(sample_seed):  # the random crop repeats after a resume
                tensor = self.vis_processor(image)
            out = {"image": tensor, "text_input": self.text_processor(caption)}
        except Exception as exn:  # any unreadable sample is skipped alike
            self.guard.handler(SampleError(url, key, exn))
            return None
        self.guard.passed()
        return out


class ImageTextWebDataset:
    """Builds the stream; the builder hands out ``.inner_dataset`` (the original's interface)."""

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
        urls = expand_urls(location) if isinstance(location, str) else list(location)
        # torch.initial_seed() is run.seed + rank after train.py's seeding.
        self.inner_dataset = ImageTextStream(
            urls,
            seed=torch.initial_seed() if seed is None else seed,
            name=name,
            vis_processor=vis_processor,
            text_processor=text_processor,
        )
