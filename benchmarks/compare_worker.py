"""One side of ``compare_original.py``: this project or an original MiniGPT-4 checkout, run in
that side's own interpreter with the checkout first on ``sys.path``.

python benchmarks/compare_worker.py --side original --repo ORIG --weights DIR --op startup
python benchmarks/compare_worker.py --side project --repo . --weights DIR --serve

``--op startup`` times the imports a script needs (the demo's ``Config``, ``registry`` and
``Chat``) and then building the tiny model through ``Config`` + registry + ``from_config`` from
the side's own ``eval_configs/minigpt4_eval.yaml``, prints one result line and exits.
``--serve`` builds once, then reads operation names on stdin (one a line) and answers each
with one result line, so that the caller can interleave the two sides call by call. On this
project's side, the line ``bounds`` answers each operation's bound on this machine instead
(``roofline.py`` at the model's shapes, in fp32; ``work.py``: the larger of its FLOPs over the
fp32 matmul peak and the LLM weights its LLM calls read over the read bandwidth).

Both sides compute in fp32 on the CPU: the original is built as its authors' CPU run of it
was (``from_config`` then ``model.float()``: it loads its LLM in fp16), the project with
``model.cpu_dtype=fp32``. The original has no keys for the tiny sizes, so this module does for it
what the tiny reference sets' harness did: its ViT constructor is wrapped to build width 48,
depth 2, and its downloads (the EVA ViT and BLIP-2 files, the ``bert-base-uncased`` config and
vocabulary) are answered from a scratch folder that holds the tiny files under those names.
Nothing here imports the other side's package; only the standard library and torch are
imported before the side's own modules.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import shutil
import sys
import tempfile
import time

RESULT_PREFIX = "COMPARE-RESULT "
OPS = ("encode", "train_step", "chat_answer", "generate")
NEW_TOKENS = 32  # tokens of the chat answer (at most) and of the raw generate (exactly)
BATCH = 2  # images of the encode and the training step
CAPTIONS = (
    "a small red square on a plain white background",
    "two blue circles side by side above a green line",
)
QUESTION = "What is in the picture?"
TINY_VIT = {"embed_dim": 48, "depth": 2, "num_heads": 4}
TINY_QFORMER = {
    "hidden_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 64,
}
TINY_QUERY_TOKENS = 8
# Enough of a BERT WordPiece vocabulary for BertTokenizer to load (the Q-Former's tokenizer is
# built by the original's model but never called by MiniGPT-4).
BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "the", "image"]


def emit(result: dict) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def common_options(repo: str, weights: str) -> list[str]:
    """Keys both sides read the same way: the tiny files, fp32-capable load, the prompts."""
    return [
        f"model.llama_model={os.path.join(weights, 'llama')}",
        f"model.ckpt={os.path.join(weights, 'pretrained_minigpt4_tiny.pth')}",
        f"model.q_former_model={os.path.join(weights, 'blip2_pretrained_flant5xxl.pth')}",
        f"model.num_query_token={TINY_QUERY_TOKENS}",
        f"model.prompt_path={os.path.join(repo, 'prompts', 'alignment.txt')}",
        "model.low_resource=False",
    ]


def project_options(weights: str) -> list[str]:
    options = [
        f"model.vit_model_path={os.path.join(weights, 'eva_vit_g.pth')}",
        "model.device=cpu",
        "model.cpu_dtype=fp32",
    ]
    options += [f"model.vit_config.{k}={v}" for k, v in TINY_VIT.items()]
    options += [f"model.qformer_config.{k}={v}" for k, v in TINY_QFORMER.items()]
    return options


def original_downloads(weights: str) -> str:
    """A scratch folder that answers the original's downloads with the tiny files: the
    torch hub cache (``$TORCH_HOME/hub/checkpoints``, where its ``download_cached_file`` looks
    first) and a ``bert-base-uncased`` folder in the working directory, which transformers'
    ``from_pretrained("bert-base-uncased")`` reads before asking the Hub."""
    root = tempfile.mkdtemp(prefix="compare-original-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    hub = os.path.join(root, "hub", "checkpoints")
    os.makedirs(hub)
    for name in ("eva_vit_g.pth", "blip2_pretrained_flant5xxl.pth"):
        os.symlink(os.path.join(weights, name), os.path.join(hub, name))
    bert = os.path.join(root, "bert-base-uncased")
    os.makedirs(bert)
    os.symlink(
        os.path.join(weights, "bert-config", "config.json"), os.path.join(bert, "config.json")
    )
    with open(os.path.join(bert, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(BERT_VOCAB) + "\n")
    os.environ["TORCH_HOME"] = root
    os.chdir(root)
    return root


def tiny_vit_for_original() -> None:
    """Make the original's ``create_eva_vit_g`` build the tiny ViT (it hard-codes ViT-g)."""
    from minigpt4.models import eva_vit

    full_size = eva_vit.VisionTransformer

    def tiny(*args, **kwargs):
        kwargs.update(TINY_VIT)
        return full_size(*args, **kwargs)

    eva_vit.VisionTransformer = tiny


def import_for_chat():
    """What a script imports to build a chat (the demo's first lines)."""
    import minigpt4  # noqa: F401
    from minigpt4.common.config import Config
    from minigpt4.common.registry import registry
    from minigpt4.conversation.conversation import Chat, CONV_VISION_Vicuna0

    return Config, registry, Chat, CONV_VISION_Vicuna0


def build(side: str, repo: str, weights: str, imported):
    """The tiny model and its eval image processor, as the demo builds them."""
    config_cls, registry = imported[0], imported[1]
    options = common_options(repo, weights)
    if side == "original":
        tiny_vit_for_original()
    else:
        options += project_options(weights)
    cfg_path = os.path.join(repo, "eval_configs", "minigpt4_eval.yaml")
    cfg = config_cls(argparse.Namespace(cfg_path=cfg_path, options=options))
    model = registry.get_model_class(cfg.model_cfg.arch).from_config(cfg.model_cfg)
    if side == "original":
        model = model.float()  # on a CPU the original's fp16 LLM must be cast (its CPU runs did)
    model.eval()
    vis_cfg = cfg.datasets_cfg.cc_sbu_align.vis_processor.train
    vis_processor = registry.get_processor_class(vis_cfg.name).from_config(vis_cfg)
    return model, vis_processor


class Operations:
    """The timed operations on one built model; each returns the tokens it generated (or 0)."""

    def __init__(self, model, vis_processor, chat_cls, conv_template):
        import numpy as np
        import torch
        from PIL import Image

        self.torch, self.model = torch, model
        generator = torch.Generator().manual_seed(0)
        self.images = torch.rand(BATCH, 3, 224, 224, generator=generator) * 2 - 1
        pixels = (np.random.default_rng(0).random((240, 320, 3)) * 255).astype(np.uint8)
        self.image = Image.fromarray(pixels)
        self.chat = chat_cls(model, vis_processor, device="cpu")
        self.conv_template = conv_template
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=3e-5, weight_decay=0.05)
        # v1 of May 2023 reads the captions from "text_input", later versions from "answer"
        captions = list(CAPTIONS)
        self.samples = {"image": self.images, "text_input": captions, "answer": captions}
        conv, img_list = self._ask()
        conv.append_message(conv.roles[1], None)
        with torch.no_grad():
            self.context = self._context(conv, img_list)

    def _ask(self):
        """The demo's upload and question. HEAD's ``upload_img`` only stores the image and its
        demo then calls ``encode_img``; v1's (and the project's) encodes at once."""
        conv, img_list = self.conv_template.copy(), []
        self.chat.upload_img(self.image, conv, img_list)
        if hasattr(self.chat, "encode_img"):
            self.chat.encode_img(img_list)
        self.chat.ask(QUESTION, conv)
        return conv, img_list

    def _context(self, conv, img_list):
        """The LLM's input embeddings (v1: ``Chat.get_context_emb``; HEAD: the model's)."""
        if hasattr(self.chat, "get_context_emb"):
            return self.chat.get_context_emb(conv, img_list)
        return self.model.get_context_emb(conv.get_prompt(), img_list)

    def encode(self) -> int:
        with self.torch.no_grad():
            self.model.encode_img(self.images)
        return 0

    def set_mode(self, name: str) -> None:
        """Train mode for the training step, eval mode for the rest: switched before the clock
        starts, since a training loop switches once per epoch, not once per step."""
        self.model.train(name == "train_step")

    def train_step(self) -> int:
        """forward + backward + AdamW of llama_proj on a batch (the prompt drawn as seeded)."""
        loss = self.model(self.samples)["loss"]
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return 0

    def chat_answer(self) -> int:
        """Upload an image, ask, answer with the same ``Chat.answer`` arguments on every side
        (``top_p`` so small that only the most likely token survives: the answer is greedy and
        repeatable; v1's repetition penalty, which HEAD's default changed)."""
        with self.torch.no_grad():
            conv, img_list = self._ask()
            _, tokens = self.chat.answer(
                conv, img_list, max_new_tokens=NEW_TOKENS, top_p=1e-3, repetition_penalty=1.0
            )
        return len(tokens)

    def generate(self) -> int:
        """Greedy generation of exactly ``NEW_TOKENS`` tokens on the chat's context embeddings,
        through what each side's answers run: the original's ``llama_model.generate``, this
        project's ``generate_from_embeddings`` (its own decoding loop; end-of-sequence barred
        as ``min_new_tokens`` bars it)."""
        with self.torch.no_grad():
            if hasattr(self.model, "generate_from_embeddings"):
                from minigpt4.models.generation import GenerationSettings, StopRule

                settings = GenerationSettings(
                    max_new_tokens=NEW_TOKENS,
                    min_length=self.context.shape[1] + NEW_TOKENS,
                    do_sample=False,
                )
                out = self.model.generate_from_embeddings([self.context], [settings], [StopRule()])
                return len(out[0].tokens)
            out = self.model.llama_model.generate(
                inputs_embeds=self.context,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                do_sample=False,
            )
        # transformers before 4.33 returns a placeholder first token with inputs_embeds
        return min(out.shape[1], NEW_TOKENS)


def bounds(ops: Operations) -> dict:
    """Each operation's least time on this machine and the roofline it comes from (this
    project's side only: it imports this project's benchmarks modules)."""
    import work

    roof = work.measure_at(ops.model, "cpu", ("fp32",))
    least = {}
    for name in OPS:
        random.seed(0)
        ops.set_mode(name)
        done = work.count(getattr(ops, name), ops.model, ops.model.llama_model)
        least[name] = done.bound_s(roof, "fp32")
    return {"bounds": least, "roofline": roof.summary()}


def versions() -> dict:
    import torch
    import transformers

    import minigpt4

    package = os.path.dirname(os.path.dirname(os.path.abspath(minigpt4.__file__)))
    return {"torch": torch.__version__, "transformers": transformers.__version__, "from": package}


def startup(args) -> None:
    """Import, then build and load: one fresh process's start."""
    start = time.perf_counter()
    imported = import_for_chat()
    imported_at = time.perf_counter()
    build(args.side, args.repo, args.weights, imported)
    emit({"import": imported_at - start, "build_load": time.perf_counter() - imported_at,
          **versions()})  # fmt: skip


def serve(args) -> None:
    """Build once, then time one operation per line read from stdin."""
    imported = import_for_chat()
    model, vis_processor = build(args.side, args.repo, args.weights, imported)
    ops = Operations(model, vis_processor, imported[2], imported[3])
    emit({"ready": True, **versions()})
    for line in sys.stdin:
        name = line.strip()
        if name == "bounds" and args.side == "project":
            emit(bounds(ops))
            continue
        if name not in OPS:
            emit({"error": f"unknown operation {name!r} (known: {', '.join(OPS)})"})
            continue
        random.seed(0)  # the same training prompt drawn on every side
        ops.set_mode(name)
        start = time.perf_counter()
        tokens = getattr(ops, name)()
        emit({"op": name, "seconds": time.perf_counter() - start, "tokens": tokens})


STAGE2_CONFIG = os.path.join("train_configs", "minigpt4_stage2_finetune.yaml")


def write_align_data(folder: str, count: int) -> str:
    """A tiny stage-2 data set in the cc_sbu_align layout (``filter_cap.json`` and
    ``image/{id}.jpg``), which both sides' stage-2 configs read. Give it more pairs than a run
    draws: the original's loader sleeps 2 s each time it starts the data over."""
    import numpy as np
    from PIL import Image

    os.makedirs(os.path.join(folder, "image"), exist_ok=True)
    rng = np.random.default_rng(0)
    annotations = []
    for i in range(count):
        pixels = (rng.random((240, 320, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, "image", f"{i}.jpg"))
        annotations.append({"image_id": str(i), "caption": CAPTIONS[i % len(CAPTIONS)]})
    with open(os.path.join(folder, "filter_cap.json"), "w", encoding="utf-8") as f:
        json.dump({"annotations": annotations}, f)
    return folder


def train_options(args) -> list[str]:
    """``train.py --options`` for ``args.iters`` stage-2 iterations on the CPU, one epoch,
    batch 2, no data-loader workers, a checkpoint at the end (both sides write one)."""
    options = common_options(args.repo, args.weights) + [
        f"datasets.cc_sbu_align.build_info.storage={args.data}",
        "run.device=cpu",
        "run.amp=False",
        "run.distributed=False",
        "run.max_epoch=1",
        f"run.iters_per_epoch={args.iters}",
        f"run.warmup_steps={args.iters}",
        "run.batch_size_train=2",
        "run.num_workers=0",
        f"run.output_dir={args.out}",
    ]
    if args.side == "project":
        options += project_options(args.weights)
    from omegaconf import OmegaConf

    config = OmegaConf.load(os.path.join(args.repo, STAGE2_CONFIG))
    if "wandb_log" in config.run:  # HEAD logs to Weights & Biases unless told not to
        options.append("run.wandb_log=False")
    if "batch_size" in config.datasets.cc_sbu_align:  # HEAD's batch size is the data set's
        options.append("datasets.cc_sbu_align.batch_size=2")
    return options


def original_cpu_training() -> None:
    """What the original's train.py needs on a CPU: the model cast to fp32 once built (its
    LLM loads in fp16); the runner's model set when it is already on the run's device (the
    runner wraps it only when moving it, and trains ``None`` otherwise); the data loaders left
    unwrapped (its ``PrefetchLoader`` opens a CUDA stream)."""
    from minigpt4.runners import runner_base
    from minigpt4.tasks import base_task

    tiny_vit_for_original()
    build_model = base_task.BaseTask.build_model
    base_task.BaseTask.build_model = lambda self, cfg: build_model(self, cfg).float()
    runner_init = runner_base.RunnerBase.__init__

    def init(self, *args, **kwargs):
        runner_init(self, *args, **kwargs)
        self._wrapped_model = self._wrapped_model or self._model

    runner_base.RunnerBase.__init__ = init
    runner_base.PrefetchLoader = lambda loader: loader


def run_train_py(args) -> None:
    """The side's own ``train.py`` in this process (the original as
    :func:`original_cpu_training` lets it run on a CPU)."""
    import runpy

    if args.side == "original":
        original_cpu_training()
    script = os.path.join(args.repo, "train.py")
    config = os.path.join(args.repo, STAGE2_CONFIG)
    sys.argv = [script, "--cfg-path", config, "--options", *train_options(args)]
    runpy.run_path(script, run_name="__main__")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=["project", "original"], required=True)
    parser.add_argument("--repo", required=True, help="the side's checkout")
    parser.add_argument("--weights", required=True, help="the tiny v1 reference weights folder")
    parser.add_argument("--threads", type=int, default=1)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--op", choices=["startup", "train"])
    mode.add_argument("--serve", action="store_true")
    parser.add_argument("--data", help="--op train: a cc_sbu_align-style folder")
    parser.add_argument("--iters", type=int, default=10, help="--op train: iterations")
    parser.add_argument("--out", help="--op train: the run's output folder")
    args = parser.parse_args(argv)
    args.repo, args.weights = os.path.abspath(args.repo), os.path.abspath(args.weights)
    sys.path.insert(0, args.repo)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.side == "original":
        original_downloads(args.weights)
    # torch reads the thread count when first imported: the caller sets OMP_NUM_THREADS, and
    # torch's own import stays inside the timed imports.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.serve:
        serve(args)
    elif args.op == "train":
        run_train_py(args)
    else:
        startup(args)


if __name__ == "__main__":
    main()
