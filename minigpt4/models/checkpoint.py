"""Finding, checking and safely reading the weight files a MiniGPT-4 config names.

- Every file is a config key. A local path is used as it is; a URL means the file cached by
  :func:`minigpt4.common.dist_utils.download_cached_file` under ``$TORCH_HOME/hub/checkpoints/``
  (the original's behaviour, and where the usual guides put the files).
- Offline by default: a URL is downloaded only when ``model.allow_download`` is true or the
  environment sets ``MINIGPT4_ALLOW_DOWNLOAD=1``. Otherwise a file missing from the cache is an
  error that says where to put it.
- :func:`preflight` checks every file before anything heavy is loaded and reports all missing ones
  in one error.
- :func:`load_state_dict_file` reads ``.pth`` pickles with ``weights_only=True`` (a crafted file
  cannot run code) and ``.safetensors`` files, recognised by content rather than by extension.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from minigpt4.common.utils import is_url, resolve_path
from minigpt4.models.qformer import BERT_BASE_MAX_POSITIONS, ours_to_lavis

logger = logging.getLogger(__name__)

LAVIS_URL = "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/"
EVA_VIT_G_URL = LAVIS_URL + "eva_vit_g.pth"
BLIP2_FLANT5XXL_URL = LAVIS_URL + "blip2_pretrained_flant5xxl.pth"
ALLOW_DOWNLOAD_ENV = "MINIGPT4_ALLOW_DOWNLOAD"

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024


class MissingWeightsError(FileNotFoundError):
    """One or more weight files named by the config are not there."""

    def __str__(self) -> str:
        return str(self.args[0])


class CheckpointError(ValueError):
    """A weight file exists but cannot be used: wrong format, missing or mis-shaped keys."""


@dataclass(frozen=True)
class WeightSource:
    """A weight file (or LLM folder) named by one config key."""

    config_key: str
    configured: str
    path: str
    url: str | None = None
    is_llm_folder: bool = False

    def problem(self) -> str | None:
        """Why this source cannot be used right now, or None when it is in place."""
        if self.is_llm_folder:
            return _llm_folder_problem(self.path)
        if os.path.isfile(self.path):
            return None
        if os.path.isdir(self.path):
            return f"{self.path} is a directory; a checkpoint file is expected"
        return "not found"

    def describe_fix(self) -> str:
        if self.is_llm_folder:
            return (
                f"set {self.config_key} to a Hugging Face LLaMA/Vicuna folder (config.json, "
                "weights and tokenizer.model or tokenizer.json), e.g. with --options "
                f"{self.config_key}=/path/to/vicuna (Meta's original checkpoints must first be "
                "converted with transformers' convert_llama_weights_to_hf.py, and Vicuna v0 "
                "deltas applied with FastChat's apply_delta)"
            )
        if self.url:
            return (
                f"download {self.url} and put it at {self.path} (the $TORCH_HOME/hub/checkpoints "
                f"cache), or set {self.config_key} to a local file, or allow the download with "
                f"model.allow_download=True or {ALLOW_DOWNLOAD_ENV}=1"
            )
        return f"put the file there or set {self.config_key} to where it is"


def downloads_allowed(config_value: bool | None = None) -> bool:
    """Opt-in switch for URL downloads: the config key wins, then ``$MINIGPT4_ALLOW_DOWNLOAD``."""
    if config_value is not None:
        return bool(config_value)
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes")


def weight_source(config_key: str, value: str, is_llm_folder: bool = False) -> WeightSource:
    """Where the file configured as ``value`` lives locally (a URL maps to the torch hub cache)."""
    if is_url(value):
        from minigpt4.common.dist_utils import cached_file_path

        return WeightSource(config_key, value, cached_file_path(value), url=value)
    return WeightSource(config_key, value, resolve_path(value), is_llm_folder=is_llm_folder)


def preflight(sources: Iterable[WeightSource], allow_download: bool = False) -> None:
    """Raise one :class:`MissingWeightsError` listing every source that is not in place.

    A URL whose file is not cached yet counts as present when downloads are allowed.
    """
    problems = []
    for source in sources:
        problem = source.problem()
        if problem is None or (source.url and allow_download and problem == "not found"):
            continue
        shown = (
            source.configured
            if source.configured == source.path
            else (f"{source.configured!r} -> {source.path}")
        )
        problems.append(
            f"  - {source.config_key}: {shown}: {problem}.\n    Fix: {source.describe_fix()}."
        )
    if problems:
        raise MissingWeightsError(
            f"{len(problems)} weight file(s) needed by the model config are missing:\n"
            + "\n".join(problems)
        )


def fetch(source: WeightSource, allow_download: bool = False) -> str:
    """Local path of ``source``, downloading a configured URL into the cache if allowed."""
    problem = source.problem()
    if problem is None:
        return source.path
    if source.url and allow_download and problem == "not found":
        from minigpt4.common.dist_utils import download_cached_file

        return download_cached_file(source.url, check_hash=False, progress=True)
    preflight([source], allow_download)
    return source.path  # unreachable: preflight raised


def _llm_folder_problem(path: str) -> str | None:
    if not os.path.isdir(path):
        return "not found" if not os.path.exists(path) else "not a folder"
    names = set(os.listdir(path))
    lacking = []
    if "config.json" not in names:
        lacking.append("config.json")
    if not any(
        n.endswith((".safetensors", ".bin")) and ("model" in n or "pytorch" in n) for n in names
    ):
        lacking.append("model weights (*.safetensors or pytorch_model*.bin)")
    if not names & {"tokenizer.model", "tokenizer.json"}:
        lacking.append("tokenizer (tokenizer.model or tokenizer.json)")
    return f"folder lacks {', '.join(lacking)}" if lacking else None


def _read_magic(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(9)


def _looks_like_safetensors(head: bytes) -> bool:
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")
    return 0 < header_len < _SAFETENSORS_MAX_HEADER and head[8:9] == b"{"


def load_state_dict_file(path: str, config_key: str) -> dict[str, torch.Tensor]:
    """Read a weight file into a flat ``{name: tensor}`` dict, safely.

    Accepts a PyTorch checkpoint (zip or legacy pickle, loaded with ``weights_only=True``) holding
    either a flat state dict or ``{"model": state_dict, ...}`` (the LAVIS / MiniGPT-4 / runner
    layouts), or a ``.safetensors`` file (whatever its extension). Anything else raises
    :class:`CheckpointError` naming the file and ``config_key``.
    """
    where = f"{path} ({config_key})"
    if not os.path.isfile(path):
        raise MissingWeightsError(f"{where}: file not found")
    head = _read_magic(path)
    if head[:4] == _ZIP_MAGIC or (head and head[0] == _PICKLE_PROTO):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - every failure becomes one clear message
            if "weights_only" in str(err) or "Unsupported global" in str(err):
                raise CheckpointError(
                    f"{where}: refusing to unpickle it: it holds objects other than tensors and "
                    f"plain containers, which could run code (torch.load(weights_only=True) said: "
                    f"{str(err).splitlines()[0]}). Re-save it as a plain state dict."
                ) from err
            raise CheckpointError(
                f"{where}: cannot be read as a PyTorch checkpoint (truncated or corrupt?): {err}"
            ) from err
    elif _looks_like_safetensors(head):
        from safetensors.torch import load_file

        try:
            obj = load_file(path, device="cpu")
        except Exception as err:  # noqa: BLE001
            raise CheckpointError(f"{where}: cannot be read as safetensors: {err}") from err
    else:
        raise CheckpointError(f"{where}: not a PyTorch checkpoint (.pth) nor a safetensors file")
    return _unwrap_state_dict(obj, where)


def _unwrap_state_dict(obj: object, where: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"{where}: not a state dict (expected a dict of tensors, or {{'model': state_dict}}; "
            f"got {type(obj).__name__})"
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{where}: not a state dict: entries {[str(k) for k in bad[:5]]} are not tensors "
            f"(top-level keys: {list(obj)[:10]})"
        )
    return dict(obj)


def eva_vit_checkpoint(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``eva_vit_g.pth`` content for ``model`` (a MiniGPT4): a flat dict in the LAVIS EVA layout."""
    return {k: v.detach().clone() for k, v in model.visual_encoder.state_dict().items()}


def blip2_checkpoint(
    model: torch.nn.Module, max_position_embeddings: int = BERT_BASE_MAX_POSITIONS
) -> dict[str, dict[str, torch.Tensor]]:
    """``blip2_pretrained_flant5xxl.pth`` content for ``model`` (a MiniGPT4), LAVIS key names.

    ``{"model": {query_tokens, ln_vision.*, Qformer.bert.* incl. the position_ids buffer}}``;
    the real file's ``t5_proj.*`` keys are not written (MiniGPT-4 ignores them).
    """
    parts = {
        k: v.detach().clone()
        for k, v in model.state_dict().items()
        if k == "query_tokens" or k.startswith(("ln_vision.", "Qformer."))
    }
    return {"model": ours_to_lavis(parts, max_position_embeddings)}


def minigpt4_checkpoint(model: torch.nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """MiniGPT-4 checkpoint layout: ``{"model": {"llama_proj.weight", "llama_proj.bias"}}``."""
    return {
        "model": {
            k: v.detach().clone()
            for k, v in model.llama_proj.state_dict(prefix="llama_proj.").items()
        }
    }


def save_checkpoint_file(content: Mapping, path: str) -> None:
    """``torch.save`` ``content`` to ``path`` atomically (temp file, then rename)."""
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(content, tmp)
    os.replace(tmp, path)


def describe_keys(keys: Iterable[str], limit: int = 12) -> str:
    """Short printable list of keys for log lines and errors."""
    keys = list(keys)
    shown = json.dumps(keys[:limit])
    return shown if len(keys) <= limit else f"{shown[:-1]}, ... ({len(keys)} in all)]"
