"""LAION (BLIP synthetic captions) webdataset shards, read as img2dataset writes them."""

from minigpt4.datasets.datasets.image_text_webdataset import ImageTextWebDataset


class LaionDataset(ImageTextWebDataset):
    """Samples ``{"image": tensor, "text_input": processed json["caption"]}``."""
