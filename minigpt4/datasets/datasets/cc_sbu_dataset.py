"""CC3M + CC12M + SBU (BLIP synthetic captions) webdataset shards, as img2dataset writes them."""

from minigpt4.datasets.datasets.image_text_webdataset import ImageTextWebDataset


class CCSBUDataset(ImageTextWebDataset):
    """Samples ``{"image": tensor, "text_input": processed json["caption"]}``."""
