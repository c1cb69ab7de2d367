"""The BLIP-2 image and caption processors MiniGPT-4 uses, with the original transforms.

Registry names: ``blip2_image_train`` (random resized crop, MiniGPT-4 v1's; ``random_crop:
False`` gives HEAD's plain resize, which MiniGPT-v2's datasets use), ``blip2_image_eval`` (plain
resize) and ``blip_caption`` (BLIP's caption cleaning).
"""

from __future__ import annotations

import re

from omegaconf import DictConfig, OmegaConf
from torchvision import transforms
from torchvision.transforms.functional import InterpolationMode

from minigpt4.common.registry import registry
from minigpt4.processors.base_processor import BaseProcessor

# CLIP's normalisation statistics, which EVA-CLIP and BLIP-2 were trained with.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

DEFAULT_IMAGE_SIZE = 224
DEFAULT_MIN_SCALE = 0.5
DEFAULT_MAX_SCALE = 1.0
DEFAULT_MAX_WORDS = 50

# Characters BLIP's pre_caption turns into spaces.
_PUNCTUATION = re.compile(r"[.!\"()*#:;~]")
_WHITESPACE_RUN = re.compile(r"\s{2,}")


def _cfg(cfg: DictConfig | None) -> DictConfig:
    return OmegaConf.create() if cfg is None else cfg


class BlipImageBaseProcessor(BaseProcessor):
    """Holds the ``Normalize`` shared by the image processors (CLIP mean/std by default)."""

    def __init__(self, mean: tuple | None = None, std: tuple | None = None) -> None:
        super().__init__()
        self.normalize = transforms.Normalize(
            CLIP_MEAN if mean is None else tuple(mean), CLIP_STD if std is None else tuple(std)
        )


@registry.register_processor("blip2_image_train")
class Blip2ImageTrainProcessor(BlipImageBaseProcessor):
    """RandomResizedCrop (bicubic, scale 0.5-1) -> tensor -> normalise. No flip, no RandAugment.

    With ``random_crop=False``: a plain bicubic resize to a square, what the original's HEAD
    made of this processor (boxes in MiniGPT-v2's answers stay on their objects).
    """

    def __init__(
        self,
        image_size: int = DEFAULT_IMAGE_SIZE,
        mean: tuple | None = None,
        std: tuple | None = None,
        min_scale: float = DEFAULT_MIN_SCALE,
        max_scale: float = DEFAULT_MAX_SCALE,
        random_crop: bool = True,
    ) -> None:
        super().__init__(mean=mean, std=std)
        size = image_size if random_crop else (image_size, image_size)
        resize = (
            transforms.RandomResizedCrop(
                size, scale=(min_scale, max_scale), interpolation=InterpolationMode.BICUBIC
            )
            if random_crop
            else transforms.Resize(size, interpolation=InterpolationMode.BICUBIC)
        )
        self.transform = transforms.Compose(
            [
                resize,
                transforms.ToTensor(),
                self.normalize,
            ]
        )

    @classmethod
    def from_config(cls, cfg: DictConfig | None = None) -> Blip2ImageTrainProcessor:
        cfg = _cfg(cfg)
        return cls(
            image_size=cfg.get("image_size", DEFAULT_IMAGE_SIZE),
            mean=cfg.get("mean", None),
            std=cfg.get("std", None),
            min_scale=cfg.get("min_scale", DEFAULT_MIN_SCALE),
            max_scale=cfg.get("max_scale", DEFAULT_MAX_SCALE),
            random_crop=cfg.get("random_crop", True),
        )


@registry.register_processor("blip2_image_eval")
class Blip2ImageEvalProcessor(BlipImageBaseProcessor):
    """Resize to a square (bicubic, aspect ratio not kept, no crop) -> tensor -> normalise."""

    def __init__(
        self,
        image_size: int = DEFAULT_IMAGE_SIZE,
        mean: tuple | None = None,
        std: tuple | None = None,
    ) -> None:
        super().__init__(mean=mean, std=std)
        self.transform = transforms.Compose(
            [
                transforms.Resize(
                    (image_size, image_size), interpolation=InterpolationMode.BICUBIC
                ),
                transforms.ToTensor(),
                self.normalize,
            ]
        )

    @classmethod
    def from_config(cls, cfg: DictConfig | None = None) -> Blip2ImageEvalProcessor:
        cfg = _cfg(cfg)
        return cls(
            image_size=cfg.get("image_size", DEFAULT_IMAGE_SIZE),
            mean=cfg.get("mean", None),
            std=cfg.get("std", None),
        )


@registry.register_processor("blip_caption")
class BlipCaptionProcessor(BaseProcessor):
    """``prompt + pre_caption(caption)``: lowercase, punctuation to spaces, at most 50 words."""

    def __init__(self, prompt: str = "", max_words: int = DEFAULT_MAX_WORDS) -> None:
        super().__init__()
        self.prompt = prompt
        self.max_words = max_words

    def __call__(self, caption: str) -> str:
        return self.prompt + self.pre_caption(caption)

    @classmethod
    def from_config(cls, cfg: DictConfig | None = None) -> BlipCaptionProcessor:
        cfg = _cfg(cfg)
        return cls(prompt=cfg.get("prompt", ""), max_words=cfg.get("max_words", DEFAULT_MAX_WORDS))

    def pre_caption(self, caption: str) -> str:
        caption = _PUNCTUATION.sub(" ", caption.lower())
        caption = _WHITESPACE_RUN.sub(" ", caption)
        caption = caption.rstrip("\n").strip(" ")
        words = caption.split(" ")
        if len(words) > self.max_words:
            caption = " ".join(words[: self.max_words])
        return caption
