"""Image and caption processors against the original's outputs and torchvision directly."""

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from omegaconf import OmegaConf
from PIL import Image
from torchvision.transforms import InterpolationMode, RandomResizedCrop

import minigpt4  # noqa: F401  (registers the processors)
from minigpt4.common.registry import registry
from minigpt4.processors.blip_processors import CLIP_MEAN, CLIP_STD, BlipCaptionProcessor
from tests.model_fixtures import load_reference


@pytest.fixture(scope="module")
def reference():
    return load_reference()


def build(name, **cfg):
    return registry.get_processor_class(name).from_config(OmegaConf.create(cfg))


def test_eval_processor_matches_original(reference):
    proc = build("blip2_image_eval", image_size=224)
    raw = reference["raw_images_uint8"]
    expected = reference["images_eval_processed"]
    noise = proc(Image.fromarray(raw[0].numpy()))
    assert noise.shape == (3, 224, 224)
    torch.testing.assert_close(noise, expected[0], rtol=0, atol=1e-6)
    # The gradient image: Pillow versions round a few bicubic pixels differently (one grey
    # level before normalisation is 1/255/0.2613 ~ 0.015; observed at most a few levels).
    gradient = proc(Image.fromarray(raw[1].numpy()))
    diff = (gradient - expected[1]).abs()
    assert diff.mean() < 1e-3
    assert (diff > 1e-4).float().mean() < 0.01
    assert diff.max() < 0.12


def test_eval_processor_squashes_without_crop():
    img = Image.new("RGB", (300, 100), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 150, 100))  # left half blue
    out = build("blip2_image_eval", image_size=32)(img)
    assert out.shape == (3, 32, 32)
    blue = (1.0 - CLIP_MEAN[2]) / CLIP_STD[2]
    red = (1.0 - CLIP_MEAN[0]) / CLIP_STD[0]
    # Aspect ratio not kept: the left half of the square output is still blue, right half red.
    assert out[2, :, :10].mean() == pytest.approx(blue, abs=1e-3)
    assert out[0, :, -10:].mean() == pytest.approx(red, abs=1e-3)


def test_train_processor_is_random_resized_crop_bicubic():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))
    proc = build("blip2_image_train", image_size=64)
    torch.manual_seed(123)
    out = proc(img)

    torch.manual_seed(123)
    top, left, h, w = RandomResizedCrop.get_params(img, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3))
    crop = img.crop((left, top, left + w, top + h)).resize((64, 64), Image.BICUBIC)
    expected = TF.normalize(TF.to_tensor(crop), CLIP_MEAN, CLIP_STD)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_train_processor_config_keys():
    proc = build("blip2_image_train", image_size=48, min_scale=0.2, max_scale=0.3)
    crop = proc.transform.transforms[0]
    assert crop.size == (48, 48)
    assert crop.scale == (0.2, 0.3)
    assert crop.ratio == pytest.approx((3 / 4, 4 / 3))
    assert crop.interpolation == InterpolationMode.BICUBIC
    assert len(proc.transform.transforms) == 3  # no flip, no RandAugment
    default = build("blip2_image_train")
    assert default.transform.transforms[0].size == (224, 224)
    assert default.transform.transforms[0].scale == (0.5, 1.0)
    assert tuple(default.normalize.mean) == CLIP_MEAN and tuple(default.normalize.std) == CLIP_STD


def test_caption_processor_matches_original(reference):
    proc = build("blip_caption")
    cases = reference["caption_processor"]
    assert [proc(c) for c in cases["in"]] == cases["out"]


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ('Say "HI"~ to: me; now*', "say hi to me now"),
        ("#tag (one)   two\t\tthree\n", "tag one two three"),
        ("keep, commas - and 'quotes'?", "keep, commas - and 'quotes'?"),
        ("  Leading and trailing.  ", "leading and trailing"),
    ],
)
def test_pre_caption_rules(caption, expected):
    assert BlipCaptionProcessor()(caption) == expected


def test_caption_max_words_and_prompt():
    words = " ".join(f"w{i}" for i in range(60))
    out = BlipCaptionProcessor()(words)
    assert out.split(" ") == [f"w{i}" for i in range(50)]
    proc = build("blip_caption", prompt="a picture of ", max_words=3)
    assert proc("One two three four") == "a picture of one two three"


def test_missing_eval_entry_gives_none():
    from minigpt4.datasets.builders.base_dataset_builder import BaseDatasetBuilder

    assert BaseDatasetBuilder._build_proc_from_cfg(None) is None
