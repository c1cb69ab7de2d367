"""The weight-file names at their earlier path, which tests, the tiny-world tools and the
benchmarks import; each lives in its one-job module of :mod:`minigpt4.models.loading`."""

from minigpt4.common.checkpoint_files import CheckpointError
from minigpt4.models.loading.key_maps import (
    blip2_state,
    eva_vit_state,
    minigpt4_state,
    training_checkpoint_state,
)
from minigpt4.models.loading.parts import load_blip2, load_eva_vit, load_minigpt4_checkpoint
from minigpt4.models.loading.reading import load_state_dict_file
from minigpt4.models.loading.sources import ALLOW_DOWNLOAD_ENV, MissingWeightsError
from minigpt4.models.loading.writing import LLM_INDEX_FILE, save_weights, write_llm_folder

__all__ = [
    "ALLOW_DOWNLOAD_ENV",
    "LLM_INDEX_FILE",
    "CheckpointError",
    "MissingWeightsError",
    "blip2_state",
    "eva_vit_state",
    "load_blip2",
    "load_eva_vit",
    "load_minigpt4_checkpoint",
    "load_state_dict_file",
    "minigpt4_state",
    "save_weights",
    "training_checkpoint_state",
    "write_llm_folder",
]
