"""Finding the weight files a config names, and checking them all before anything is loaded.

Every file is a config key. A local path is used as it is; a URL means the file cached by
:func:`minigpt4.common.dist_utils.download_cached_file` under ``$TORCH_HOME/hub/checkpoints/``
(the original's behaviour, and where the usual guides put the files). Offline by default: a URL
is downloaded only when ``model.allow_download`` is true or the environment sets
``MINIGPT4_ALLOW_DOWNLOAD=1``; otherwise a missing file is an error that says where to put it.
:func:`preflight` checks every file and reports all missing ones in one error.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from minigpt4.common.output_files import file_kind
from minigpt4.common.utils import is_url, resolve_path
from minigpt4.models.model_config import MiniGPT4Config
from minigpt4.models.tokenizer import TOKENIZER_FILE

ALLOW_DOWNLOAD_ENV = "MINIGPT4_ALLOW_DOWNLOAD"


HF_TOKENIZER_FILE = "tokenizer.json"
HF_TOKENIZER_CONFIG = "tokenizer_config.json"


class MissingWeightsError(FileNotFoundError):
    """One or more weight files named by the config are not there."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class WeightSource:
    """A weight file (or LLM folder) named by one config key."""

    config_key: str
    configured: str
    path: str
    url: str | None = None
    is_llm_folder: bool = False
    # a folder that must hold a tokenizer of this kind (model.tokenizer; None: not a tokenizer)
    tokenizer: str | None = None
    holds_tokenizer: bool = False

    def problem(self) -> str | None:
        """Why this source cannot be used right now, or None when it is in place."""
        if self.is_llm_folder or self.holds_tokenizer:
            return _folder_problem(
                self.path, self.is_llm_folder, self.holds_tokenizer, self.tokenizer
            )
        if os.path.isfile(self.path):
            return None
        if os.path.isdir(self.path):
            return f"{self.path} is a directory; a checkpoint file is expected"
        kind = file_kind(self.path)
        return f"{self.path} is {kind}, not a file" if kind else "not found"

    def describe_fix(self) -> str:
        if self.holds_tokenizer and not self.is_llm_folder:
            return (
                f"set {self.config_key} to a folder with the LLM's tokenizer ({TOKENIZER_FILE} "
                f"or {HF_TOKENIZER_FILE}), or leave it empty to use model.llama_model's"
            )
        if self.is_llm_folder:
            return (
                f"set {self.config_key} to a Hugging Face causal-LM folder (config.json, "
                f"weights and a tokenizer: {TOKENIZER_FILE} for LLaMA/Vicuna, tokenizer.json "
                "for other families), e.g. with --options "
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


def llm_sources(config: MiniGPT4Config) -> list[WeightSource]:
    """The LLM folder and, where the tokenizer is elsewhere (``model.tokenizer_path``), that
    folder; whichever holds the tokenizer is checked for one of ``model.tokenizer``'s kind."""
    llm = WeightSource(
        "model.llama_model",
        config.llama_model,
        resolve_path(config.llama_model),
        is_llm_folder=True,
        tokenizer=config.tokenizer,
        holds_tokenizer=not config.tokenizer_path,
    )
    if not config.tokenizer_path:
        return [llm]
    path = resolve_path(config.tokenizer_path)
    own = WeightSource(
        "model.tokenizer_path",
        config.tokenizer_path,
        path,
        tokenizer=config.tokenizer,
        holds_tokenizer=True,
    )
    return [llm, own]


def config_sources(config: MiniGPT4Config) -> list[WeightSource]:
    """Every file the config needs: ViT, the image adapter's, LLM folder, checkpoint, prompts."""
    sources = [weight_source("model.vit_model_path", config.vit_model_path)]
    sources += [weight_source(key, value) for key, value in config.adapter.weight_files(config)]
    sources += llm_sources(config)
    if config.ckpt:
        sources.append(weight_source("model.ckpt", config.ckpt))
    if config.prompt_path:
        path = resolve_path(config.prompt_path)
        sources.append(WeightSource("model.prompt_path", config.prompt_path, path))
    return sources


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
    raise AssertionError("preflight raises for a source with a problem")


def tokenizer_kind(folder: str, configured: str | None) -> str | None:
    """``model.tokenizer`` or, unset, what the folder holds: ``sentencepiece`` for a
    ``tokenizer.model`` (LLaMA/Vicuna: the original's exact tokenizer), ``auto`` for a
    ``tokenizer.json``; None when it holds neither."""
    if configured is not None:
        return configured
    if os.path.isfile(os.path.join(folder, TOKENIZER_FILE)):
        return "sentencepiece"
    if os.path.isfile(os.path.join(folder, HF_TOKENIZER_FILE)):
        return "auto"
    return None


def _tokenizer_lack(names: set[str], kind: str | None) -> str | None:
    if kind == "sentencepiece" and TOKENIZER_FILE not in names:
        return f"the SentencePiece tokenizer ({TOKENIZER_FILE}; model.tokenizer: sentencepiece)"
    if kind == "auto" and not names & {HF_TOKENIZER_FILE, HF_TOKENIZER_CONFIG, TOKENIZER_FILE}:
        return f"a tokenizer ({HF_TOKENIZER_FILE} or {HF_TOKENIZER_CONFIG}; model.tokenizer: auto)"
    if kind is None and not names & {HF_TOKENIZER_FILE, TOKENIZER_FILE}:
        return f"a tokenizer ({TOKENIZER_FILE} for LLaMA/Vicuna, or {HF_TOKENIZER_FILE})"
    return None


def _folder_problem(path: str, llm: bool, tokenizer: bool, kind: str | None) -> str | None:
    if not os.path.isdir(path):
        return "not found" if not os.path.exists(path) else "not a folder"
    names = set(os.listdir(path))
    lacking = []
    if llm and "config.json" not in names:
        lacking.append("config.json")
    if llm and not any(
        n.endswith((".safetensors", ".bin")) and ("model" in n or "pytorch" in n) for n in names
    ):
        lacking.append("model weights (*.safetensors or pytorch_model*.bin)")
    if tokenizer and (lack := _tokenizer_lack(names, kind)):
        lacking.append(lack)
    return f"folder lacks {', '.join(lacking)}" if lacking else None
