"""Train the tiny world's SentencePiece tokenizer and save it as a LLaMA-style HF folder.

    python -m tiny_world.build_tokenizer --out tiny_world/checkpoint/llama

Like LLaMA's: BPE, ids unk 0 / bos 1 / eos 2, no pad, byte fallback (any text encodes), identity
normalisation (a newline stays a newline), "▁" dummy prefix. "###", "<Img>" and "</Img>" are single
pieces, so the demo's stop word is one token. The folder holds ``tokenizer.model``,
``tokenizer_config.json`` and ``special_tokens_map.json`` and loads offline with
``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
from pathlib import Path

import sentencepiece as spm

from minigpt4.common.atomic_write import atomic_write
from tiny_world import text

logger = logging.getLogger(__name__)

USER_SYMBOLS = ("###", "<Img>", "</Img>")
DEFAULT_VOCAB_SIZE = 1000  # an upper bound: the world's text has merges for ~920 pieces
DEFAULT_SEED = 1
DEFAULT_CORPUS_SCENES = 4000

_SPECIAL = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
}


def train_sentencepiece(
    seed: int, vocab_size: int, corpus_scenes: int, template: str = "vicuna"
) -> bytes:
    """The serialized SentencePiece model trained on the world's text (deterministic); with
    ``template`` "llama2" also on the LLaMA-2 Chat prompts (``[INST]`` ... ``[/INST]``); with
    "v2" on the tiny MiniGPT-v2's task texts only, its grid coordinates, task tags and chat
    marks single pieces (``v2_layouts.USER_SYMBOLS``)."""
    symbols = USER_SYMBOLS
    if template == "v2":
        from tiny_world import v2_layouts

        lines = list(v2_layouts.corpus_lines(seed, corpus_scenes))
        symbols = v2_layouts.USER_SYMBOLS
    else:
        lines = list(text.corpus(seed, corpus_scenes))
    if template == "llama2":
        from tiny_world.llama2_layouts import corpus_lines

        lines += list(corpus_lines(corpus_scenes))
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        split_digits=True,
        character_coverage=1.0,
        user_defined_symbols=list(symbols),
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def _write(path: Path, data: bytes) -> None:
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def save_hf_folder(model_bytes: bytes, out: Path) -> None:
    """Write ``tokenizer.model`` plus the two JSON files transformers reads for LLaMA."""
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "tokenizer.model", model_bytes)
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "legacy": False,
        "model_max_length": 2048,
        "pad_token": None,
        "sp_model_kwargs": {},
        **_SPECIAL,
    }
    _write(out / "tokenizer_config.json", (json.dumps(config, indent=2) + "\n").encode())
    _write(out / "special_tokens_map.json", (json.dumps(_SPECIAL, indent=2) + "\n").encode())


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="tiny_world/checkpoint/llama")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    parser.add_argument("--corpus-scenes", type=int, default=DEFAULT_CORPUS_SCENES)
    parser.add_argument(
        "--template",
        choices=("vicuna", "llama2", "v2"),
        default="vicuna",
        help="llama2: the corpus also holds the LLaMA-2 Chat prompts; v2: the tiny MiniGPT-v2's",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    out = Path(args.out)
    model = train_sentencepiece(args.seed, args.vocab_size, args.corpus_scenes, args.template)
    save_hf_folder(model, out)
    size = spm.SentencePieceProcessor(model_proto=model).get_piece_size()
    logger.info("tokenizer (%d pieces) written to %s", size, out)
    return out


if __name__ == "__main__":
    main()
