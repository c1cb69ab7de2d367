"""Bad input, tried as a hostile user would: each case gets a clear, early, exact answer.

One test (or one parametrized test) per row of issue 16's table, then the cases that already
worked, kept so the list stays fixed:

- stage 1 killed mid-epoch and resumed: test_stage1_resume_is_exact (one process; the 2-rank
  torchrun version with num_workers 0 and 2 is tests/test_train_resume_stage1.py)
- a resume that cannot be exact (other num_workers): test_resume_that_cannot_be_exact_...
- kill -9 while checkpoint_latest.pth is written: test_kill_during_save_...
- run.resume_ckpt_path empty, truncated, crafted, incomplete: test_unusable_resume_checkpoint_...
- resume from a checkpoint already at max_epoch: test_resume_of_a_finished_run_...
- "Averaged stats" of the resumed epoch: test_resumed_epoch_stats_...
- datasets.laion.build_inf (typo): test_dataset_key_typo_...
- 16-bit and other image modes, in every reader: test_image_modes_..., test_16_bit_png_...
- fake.png, a 30000x30000 PNG in the demo: test_demo_refuses_bad_images_..., browser test
- the chatbot's own trash button: test_chatbot_clear_button_...
- --server-port taken or 99999, default port taken: test_demo_port_..., test_demo_default_...
- inference --out unwritable, answers kept on failure: test_inference_out_..., _failure_...
- modes of the batch command's files: test_inference_output_file_modes
- gradio's share hint: test_demo_share_hint_names_the_flag
- already fine: missing weights, crafted model.ckpt, corrupt shards and images, empty shards,
  typos in run: test_still_...

The over-long question row: tests/test_chat.py::test_overflow_says_what_the_truncation_cuts and
the browser test in tests/test_demo.py (the refusal shown in the page).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import pickle
import random
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import minigpt4  # noqa: F401  (registers builders, processors, models)
import train
from minigpt4.common.atomic_write import remove_stale_temp_files
from minigpt4.common.checkpoint_files import CheckpointError
from minigpt4.common.config import ConfigError
from minigpt4.processors.image_io import MAX_IMAGE_PIXELS, ImageLoadError, load_image
from minigpt4.runners.checkpointer import Checkpointer
from minigpt4.runners.resume import FinishedRunError
from tests.model_fixtures import tiny_model_config
from tests.train_helpers import write_align_folder, write_shards, write_stage1_config

REPO = Path(__file__).resolve().parents[1]
SUBPROCESS_TIMEOUT_S = 300
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


class Killed(BaseException):
    """Stands in for a kill in an in-process run (not an Exception: nothing catches it)."""


def messages(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png(width: int, height: int, depth: int, color_type: int, rows: bytes) -> bytes:
    """A PNG file written by hand (PIL cannot write 16-bit colour, nor a bomb cheaply)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))  # fmt: skip


def png_16bit(pixels: np.ndarray, color_type: int) -> bytes:
    """16-bit PNG of ``pixels`` (H, W[, C]); colour type 0 grey, 2 RGB, 6 RGBA."""
    height, width = pixels.shape[:2]
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))
    return png(width, height, 16, color_type, rows)


def huge_png(width: int, height: int) -> bytes:
    """A small file announcing ``width`` x ``height`` pixels (a decompression bomb's shape):
    one row of data is enough, the header alone must get it refused."""
    return png(width, height, 8, 0, b"\x00" * (width + 1))


GRADIENT_16 = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1040).astype(np.uint16)


def expected_8bit(values16: np.ndarray) -> np.ndarray:
    """16-bit intensities on the 8-bit scale (65535 -> 255), computed independently."""
    return np.floor(values16.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)


# --- stage-1 resume (rows 1 and 5), in one process ---------------------------------------------


class LogRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def run_train(cfg: Path, out: Path, *options: str) -> list[str]:
    """train.main as train.py runs it; returns the log lines of the run."""
    handler = LogRecords()
    logging.getLogger().addHandler(handler)
    try:
        train.main(["--cfg-path", str(cfg), "--options", f"run.output_dir={out}", *options])
    finally:
        logging.getLogger().removeHandler(handler)
    return handler.lines


def only_job(folder: Path) -> Path:
    (job,) = [p for p in folder.iterdir() if p.is_dir()]
    return job


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """Uninterrupted, killed after the checkpoint at (epoch 0, 3 iterations), and resumed."""
    root = tmp_path_factory.mktemp("stage1")
    laion = write_shards(root / "laion", n_shards=2, per_shard=6, seed=1, corrupt=((1, 3),))
    cc_sbu = write_shards(root / "cc_sbu", n_shards=2, per_shard=6, seed=2)
    cfg = write_stage1_config(root / "s1.yaml", laion, cc_sbu, Path("unused"), max_epoch=2,
                              iters_per_epoch=5, save_freq_iters=3)  # fmt: skip
    run_train(cfg, root / "full")
    save = Checkpointer.save_periodic

    def save_then_die(self, epoch, i, meters=None):
        save(self, epoch, i, meters)
        if (epoch, i) == (0, 2):
            raise Killed

    with pytest.MonkeyPatch.context() as mp, pytest.raises(Killed):
        mp.setattr(Checkpointer, "save_periodic", save_then_die)
        run_train(cfg, root / "killed")
    latest = only_job(root / "killed") / "checkpoint_latest.pth"
    resumed_log = run_train(cfg, root / "resumed", f"run.resume_ckpt_path={latest}")
    return {"root": root, "cfg": cfg, "latest": latest, "resumed_log": resumed_log,
            "full": only_job(root / "full"), "resumed": only_job(root / "resumed")}  # fmt: skip


def test_stage1_resume_is_exact(stage1):
    log = stage1["resumed_log"]
    assert f"Resume checkpoint from {stage1['latest']}" in log
    assert not [line for line in log if "cannot be exact" in line]
    assert any(line.startswith("Train: data epoch: [0]  [3/5]") for line in log)
    a = torch.load(stage1["full"] / "checkpoint_1.pth", weights_only=True)
    b = torch.load(stage1["resumed"] / "checkpoint_1.pth", weights_only=True)
    for key in ("llama_proj.weight", "llama_proj.bias"):
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["rank_states"][0]["loaders"] == b["rank_states"][0]["loaders"]


def test_resumed_epoch_stats_cover_the_whole_epoch(stage1):
    def stats(job):
        lines = (job / "log.txt").read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith('{"train_')]

    assert len(stats(stage1["full"])) == 2
    assert stats(stage1["resumed"]) == stats(stage1["full"])  # epoch 0 included, same averages
    latest = torch.load(stage1["latest"], weights_only=True)
    assert latest["rank_states"][0]["meters"]["loss"]["count"] == 3


def test_resume_of_a_finished_run_exits_non_zero_before_loading(stage1, tmp_path):
    finished = stage1["full"] / "checkpoint_1.pth"  # epoch 1 of max_epoch 2: nothing left
    with pytest.raises(FinishedRunError) as err:
        run_train(stage1["cfg"], tmp_path / "out", f"run.resume_ckpt_path={finished}")
    message = str(err.value)
    assert message.startswith(f"run.resume_ckpt_path: {finished} ends a finished run")
    assert "run.max_epoch is 2" in message and "Raise run.max_epoch" in message
    assert not (tmp_path / "out").exists()  # stopped before the runner (or the model) started
    # as a command: a non-zero exit status and the message, nothing trained
    cmd = [sys.executable, "train.py", "--cfg-path", str(stage1["cfg"]), "--options",
           f"run.output_dir={tmp_path / 'cli'}", f"run.resume_ckpt_path={finished}"]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True,
                            timeout=SUBPROCESS_TIMEOUT_S)  # fmt: skip
    assert result.returncode == 1
    assert f"train.py: run.resume_ckpt_path: {finished} ends a finished run" in result.stderr
    assert "Traceback" not in result.stderr  # a message, not a traceback
    assert "Loading VIT" not in result.stderr and not (tmp_path / "cli").exists()


# --- kill -9 during a checkpoint save (row 2) -----------------------------------------------------

# The checkpointer's save (atomic_torch_save: torch.save inside atomic_write), with atomic_write
# loaded from its file without the package's imports: a fresh process per kill then starts in
# ~2 s instead of ~6.
SAVER = """
import importlib.util, torch
spec = importlib.util.spec_from_file_location("atomic_write", {module!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
checkpoint = torch.load({source!r}, weights_only=True)
print("ready", flush=True)
while True:
    with module.atomic_write({target!r}) as tmp:
        torch.save(checkpoint, tmp)
"""
KILL_TRIES = 5  # and more (up to MAX_KILL_TRIES) until one kill landed inside a save (~70%)
MAX_KILL_TRIES = 12


def test_kill_during_save_leaves_loadable_files_and_the_next_start_cleans_up(stage1, tmp_path):
    base = tmp_path / "output"
    job = base / "202601011200"
    job.mkdir(parents=True)
    target = job / "checkpoint_latest.pth"
    script = tmp_path / "saver.py"
    module = REPO / "minigpt4" / "common" / "atomic_write.py"
    script.write_text(SAVER.format(module=str(module), source=str(stage1["latest"]),
                                   target=str(target)))  # fmt: skip
    rng = random.Random(16)
    for attempt in range(MAX_KILL_TRIES):
        if attempt >= KILL_TRIES and any(job.glob("*.tmp.*")):
            break
        proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=ENV,
                                text=True)  # fmt: skip
        assert proc.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.0, 0.05))  # somewhere in the save loop
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for pth in job.glob("*.pth"):  # what a kill leaves is always loadable
            assert torch.load(pth, weights_only=True)["train_state"]["next_iter"] == 3
    assert target.is_file()
    leftovers = sorted(job.glob("checkpoint_latest.pth.tmp.*"))
    assert leftovers, "no kill landed inside a save: the test proved nothing"

    # the next start (a resume into the same output folder) removes them, and says so
    log = run_train(stage1["cfg"], base, f"run.resume_ckpt_path={target}")
    assert sorted(base.rglob("*.tmp.*")) == []
    for path in leftovers:
        assert any(
            line.startswith(f"Removed {path}: a temporary file left by process") for line in log
        )
    assert f"Resume checkpoint from {target}" in log


def test_temp_file_of_a_running_writer_is_kept(tmp_path):
    live = tmp_path / f"checkpoint_latest.pth.tmp.{os.getppid()}"  # pytest's parent: alive
    dead = tmp_path / "checkpoint_3.pth.tmp.4194304"  # above Linux's default pid_max
    unrelated = tmp_path / "notes.tmp.txt"
    for path in (live, dead, unrelated):
        path.write_bytes(b"")
    assert remove_stale_temp_files([str(tmp_path)]) == [str(dead)]
    assert live.exists() and unrelated.exists() and not dead.exists()


# --- unusable run.resume_ckpt_path (rows 3 and 4) -------------------------------------------------


class Payload:
    """A pickle that would create a file when unpickled without weights_only."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_bad_checkpoint(path: Path, kind: str, good: Path) -> None:
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "crafted":
        with open(path, "wb") as f:
            pickle.dump({"model": Payload(path.with_suffix(".pwned"))}, f, protocol=2)
    elif kind == "text":
        path.write_text("model: llama_proj\n")
    elif kind == "no optimizer":
        torch.save({"model": {}, "epoch": 0}, path)
    elif kind == "a list":
        torch.save([torch.zeros(1)], path)


@pytest.mark.parametrize(
    "kind, cause",
    [
        ("empty", " is empty (0 bytes): its save was interrupted; use another checkpoint"),
        ("truncated", ": the file is truncated or corrupt ("),
        ("text", ": not a PyTorch checkpoint: it does not start like a file torch.save writes"),
        ("crafted", ": refused to unpickle it: it holds a reference to posix.system, which"),
        ("no optimizer", " is not a training checkpoint: it has no 'optimizer' entry"),
        ("a list", " holds a list, not a checkpoint dict"),
    ],
)
def test_unusable_resume_checkpoint_names_key_file_and_cause(stage1, tmp_path, caplog, kind,
                                                             cause):  # fmt: skip
    bad = tmp_path / "checkpoint_latest.pth"
    write_bad_checkpoint(bad, kind, good=stage1["latest"])
    with caplog.at_level(logging.INFO), pytest.raises(CheckpointError) as err:
        run_train(stage1["cfg"], tmp_path / "out", f"run.resume_ckpt_path={bad}")
    assert str(err.value).startswith(f"run.resume_ckpt_path: {bad}{cause}")
    assert "Loading VIT" not in messages(caplog)  # before the model is built
    assert not bad.with_suffix(".pwned").exists()  # nothing in the file ran


def test_missing_resume_checkpoint(stage1, tmp_path):
    missing = tmp_path / "nowhere" / "checkpoint_latest.pth"
    with pytest.raises(FileNotFoundError, match=f"^run.resume_ckpt_path: {missing} does not"):
        run_train(stage1["cfg"], tmp_path / "out", f"run.resume_ckpt_path={missing}")


# --- datasets.<name> typo (row 7) ---------------------------------------------------------------


def test_dataset_key_typo_is_an_error_naming_the_valid_key(stage1, tmp_path, caplog):
    with caplog.at_level(logging.INFO), pytest.raises(ConfigError) as err:
        run_train(stage1["cfg"], tmp_path / "out", "datasets.laion.build_inf.storage=/data/x.tar")
    assert str(err.value).startswith(
        "--options: unknown key 'datasets.laion.build_inf'. Did you mean 'build_info'?"
    )
    text = OmegaConf.to_yaml(OmegaConf.load(stage1["cfg"])).replace("min_scale", "minscale")
    text = text.replace("name: blip2_image_train", "name: blip2_image_train\n        minscale: 1")
    typo = tmp_path / "typo.yaml"
    typo.write_text(text)
    with pytest.raises(ConfigError) as err:
        train.main(["--cfg-path", str(typo)])
    assert str(err.value).startswith(
        f"{typo}: unknown key 'datasets.laion.vis_processor.train.minscale'. Did you mean "
        "'min_scale'?"
    )
    assert "Loading VIT" not in messages(caplog)


# --- 16-bit and other image modes, everywhere images are read (row 8) ------------------------


def pil_image(kind: str) -> tuple[Image.Image, np.ndarray]:
    """An image of mode ``kind`` and the 8-bit RGB pixels a viewer shows for it."""
    if kind == "I;16 png":
        img = Image.open(io.BytesIO(png_16bit(GRADIENT_16, 0)))
        assert img.mode == "I;16"
        return img, np.repeat(expected_8bit(GRADIENT_16)[..., None], 3, axis=2)
    if kind == "I":
        return Image.fromarray(GRADIENT_16.astype(np.int32)), np.repeat(
            expected_8bit(GRADIENT_16)[..., None], 3, axis=2
        )
    if kind == "I beyond 16 bit":
        values = GRADIENT_16.astype(np.int32) * 100  # up to 6.5M: scaled by the maximum
        grey = np.floor(values / values.max() * 255 + 0.5).astype(np.uint8)
        return Image.fromarray(values), np.repeat(grey[..., None], 3, axis=2)
    if kind == "F 0-1":
        values = GRADIENT_16.astype(np.float32) / 65535
        grey = np.floor(values.astype(np.float64) * 255 + 0.5).astype(np.uint8)
        return Image.fromarray(values), np.repeat(grey[..., None], 3, axis=2)
    if kind == "RGB 16-bit png":
        rgb = np.stack([GRADIENT_16, 65535 - GRADIENT_16, np.full_like(GRADIENT_16, 32768)], -1)
        return Image.open(io.BytesIO(png_16bit(rgb, 2))), expected_8bit(rgb)
    if kind == "RGBA 16-bit png, half transparent":
        rgba = np.zeros((8, 8, 4), np.uint16)
        rgba[..., 0], rgba[..., 3] = 65535, 32768  # red at 50% over white
        return Image.open(io.BytesIO(png_16bit(rgba, 6))), np.tile([255, 127, 127], (8, 8, 1))
    if kind == "LA transparent":
        return Image.new("LA", (8, 8), (0, 0)), np.full((8, 8, 3), 255)
    if kind == "P with transparency":
        img = Image.new("P", (8, 8), 1)
        img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
        img.paste(0, (0, 0, 4, 8))
        img.info["transparency"] = 0
        expected = np.tile([10, 200, 30], (8, 8, 1))
        expected[:, :4] = 255
        return img, expected
    if kind == "CMYK":
        return Image.new("CMYK", (8, 8), (0, 255, 255, 0)), np.tile([255, 0, 0], (8, 8, 1))
    raise ValueError(kind)


IMAGE_KINDS = ["I;16 png", "I", "I beyond 16 bit", "F 0-1", "RGB 16-bit png",
               "RGBA 16-bit png, half transparent", "LA transparent", "P with transparency",
               "CMYK"]  # fmt: skip


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_image_modes_become_the_8bit_rgb_a_viewer_shows(kind):
    img, expected = pil_image(kind)
    rgb = load_image(img)
    assert rgb.mode == "RGB"
    assert np.abs(np.asarray(rgb, np.int16) - expected).max() <= 1, kind


def test_16_bit_png_reads_the_same_in_every_reader(tmp_path):
    """The cc_sbu_align dataset, the webdataset stream, the batch command and the demo all see
    the 16-bit PNG's true intensities (not PIL's all-white clip)."""
    import demo
    from minigpt4.datasets.datasets.cc_sbu_align_dataset import CCSBUAlignDataset
    from minigpt4.datasets.datasets.image_text_webdataset import ImageTextStream
    from minigpt4.inference import _load
    from minigpt4.processors import Blip2ImageEvalProcessor, BlipCaptionProcessor

    data = png_16bit(GRADIENT_16, 0)
    truth = Image.fromarray(expected_8bit(GRADIENT_16)).convert("RGB")
    proc = Blip2ImageEvalProcessor(image_size=32)
    expected = proc(truth)
    (tmp_path / "image").mkdir()
    (tmp_path / "image" / "2.jpg").write_bytes(data)  # the folder's names say .jpg
    ann = tmp_path / "filter_cap.json"
    ann.write_text(json.dumps({"annotations": [{"image_id": "2", "caption": "grey"}]}))
    folder = CCSBUAlignDataset(proc, None, vis_root=str(tmp_path / "image"), ann_paths=[str(ann)])
    assert torch.equal(folder[0]["image"], expected)

    import webdataset as wds

    with wds.TarWriter(str(tmp_path / "00000.tar")) as sink:
        sink.write({"__key__": "k", "png": data, "json": {"caption": "Grey."}})
    stream = ImageTextStream([str(tmp_path / "00000.tar")], 0, "laion", proc,
                             BlipCaptionProcessor())  # fmt: skip
    assert torch.equal(next(iter(stream))["image"], expected)
    assert torch.equal(_load(str(tmp_path / "image" / "2.jpg"), proc).tensor, expected)
    upload = demo.open_upload({"path": str(tmp_path / "image" / "2.jpg"), "orig_name": "x.png"})
    assert np.array_equal(np.asarray(upload), np.asarray(truth))
    clipped = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # PIL's own conversion
    assert (clipped == 255).mean() > 0.9 and not (np.asarray(truth) == 255).mean() > 0.1


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"hello, I am text", "not an image file (or a format Pillow cannot read)"),
        (huge_png(30000, 30000), "the image is too large (900 megapixels; at most 100"),
        (huge_png(12000, 10000), "the image is too large (12000x10000 = 120 megapixels; at"),
        ("truncated", "cannot be decoded (truncated or corrupt?)"),
    ],
)
def test_unusable_image_files_are_refused_with_the_reason(tmp_path, content, reason):
    path = tmp_path / "fake.png"
    if content == "truncated":
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (9, 9, 9)).save(buf, format="PNG")
        content = buf.getvalue()[:-30]
    path.write_bytes(content)
    with pytest.raises(ImageLoadError) as err:
        load_image(str(path))
    assert str(err.value).startswith(f"{path}: {reason}")
    assert err.value.reason.startswith(reason)
    assert MAX_IMAGE_PIXELS == 100_000_000


# --- the demo: refused images, the chatbot's clear button, ports, share hint (rows 9-13, 16) ---


@pytest.fixture(scope="module")
def demo_app():
    """The demo page over the tiny model, served in this process on 127.0.0.1."""
    import demo
    from minigpt4.common.registry import registry
    from minigpt4.conversation import Chat

    model = registry.get_model_class("mini_gpt4").from_config(tiny_model_config(stage=2)).eval()
    chat = Chat(model, registry.get_processor_class("blip2_image_eval").from_config(None), "cpu")
    app = demo.build_demo(chat, seed=7)
    port = free_port()
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        demo.launch(app, "127.0.0.1", port, share=False)
    try:
        yield {"app": app, "url": f"http://127.0.0.1:{port}/", "console": console.getvalue()}
    finally:
        app.close()


def test_demo_share_hint_names_the_flag(demo_app):
    import demo

    console = demo_app["console"]
    assert f"* {demo.SHARE_HINT}" in console  # "To create a public link, restart with --share."
    assert "share=True" not in console and demo.GRADIO_SHARE_HINT not in console
    assert f"Running on local URL:  {demo_app['url'].rstrip('/')}" in console


@pytest.fixture
def image_files(tmp_path):
    files = {"fake.png": b"just text, named like an image", "huge.png": huge_png(30000, 30000),
             "deep.png": png_16bit(GRADIENT_16, 0)}  # fmt: skip
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


@pytest.mark.parametrize(
    "name, shown",
    [
        ("fake.png", "This image cannot be used: fake.png: not an image file"),
        ("huge.png", "This image cannot be used: huge.png: the image is too large (900 megapix"),
    ],
)
def test_demo_refuses_bad_images_with_the_reason(demo_app, image_files, name, shown, caplog, capfd):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(demo_app["url"], verbose=False)
    capfd.readouterr()
    with caplog.at_level(logging.WARNING, logger="minigpt4.demo"):
        with pytest.raises(AppError) as err:
            client.predict(handle_file(str(image_files / name)), "", api_name="/upload")
    assert str(err.value).startswith(shown)  # gr.Error: shown in the page, not only in a log
    # the console: one line with the reason, no traceback
    refused = [r.getMessage() for r in caplog.records if r.name == "minigpt4.demo"]
    assert len(refused) == 1 and refused[0].startswith(f"Upload refused. {shown}"), refused
    console = capfd.readouterr()
    assert "Traceback" not in console.err + console.out
    # the session is still usable: a good (16-bit) image is accepted afterwards
    image_update, box = client.predict(handle_file(str(image_files / "deep.png")), "",
                                       api_name="/upload")  # fmt: skip
    assert image_update["interactive"] is False and box["interactive"] is True


def test_chatbot_clear_button_resets_the_conversation(demo_app, image_files):
    from gradio_client import Client, handle_file

    app = demo_app["app"]
    chatbot = next(b for b in app.blocks.values() if type(b).__name__ == "Chatbot")
    restart = next(b for b in app.blocks.values() if getattr(b, "value", None) == "Restart")
    by_trigger = {target: fn.fn for fn in app.fns.values() for target in fn.targets}
    assert by_trigger[(chatbot._id, "clear")] is by_trigger[(restart._id, "click")]

    client = Client(demo_app["url"], verbose=False)
    client.predict(handle_file(str(image_files / "deep.png")), "", api_name="/upload")
    _, history = client.predict("What is it?", [], api_name="/ask")
    assert len(client.predict(history, 1, 1.0, api_name="/answer")) == 2  # answered
    chatbot_value, image_update, box = client.predict(api_name="/clear")
    assert chatbot_value == [] and image_update["value"] is None
    assert box["placeholder"] == "Please upload your image first" and box["interactive"] is False
    # the model's conversation is gone too: no image, so a question gets no answer
    _, history = client.predict("And now?", [], api_name="/ask")
    assert client.predict(history, 1, 1.0, api_name="/answer") == history


@pytest.mark.browser
def test_demo_shows_why_an_image_is_refused_in_the_browser(demo_app, image_files, tmp_path):
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("/usr/bin/chromium not found: install Debian's chromium")
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                     args=["--no-sandbox", "--disable-gpu",
                                           "--disable-dev-shm-usage"])  # fmt: skip
        try:
            page = browser.new_page()
            page.goto(demo_app["url"], wait_until="domcontentloaded", timeout=120_000)
            page.locator("input[type=file]").first.set_input_files(str(image_files / "fake.png"))
            page.get_by_role("button", name="Upload & Start Chat").click()
            toast = page.get_by_text("This image cannot be used: fake.png: not an image file")
            expect(toast.first).to_be_visible(timeout=60_000)
            # gradio marks a failed event's outputs with "Error" badges (over the image and the
            # text box); the demo clears them, so once the toast goes no "Error" is left
            expect(page.get_by_text("Error", exact=True)).to_have_count(0, timeout=30_000)

            page.locator("input[type=file]").first.set_input_files(str(image_files / "deep.png"))
            page.get_by_role("button", name="Upload & Start Chat").click()
            textbox = page.get_by_label("User", exact=True)
            expect(textbox).to_be_enabled(timeout=60_000)
            textbox.fill("What is it?")
            textbox.press("Enter")
            expect(page.locator("[data-testid='bot']").first).not_to_be_empty(timeout=120_000)
            page.get_by_role("button", name="Clear").click()  # the chatbot's trash button
            expect(textbox).to_be_disabled(timeout=60_000)  # the same reset as "Restart"
            expect(page.get_by_role("button", name="Upload & Start Chat")).to_be_visible()
        finally:
            browser.close()


def run_demo_main(monkeypatch, *args: str) -> str:
    """demo.main in this process until it exits; the model must not be loaded."""
    import demo

    def no_model(_args):
        raise AssertionError("the model was loaded before the port was checked")

    monkeypatch.setattr(demo, "chat_from_args", no_model)
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--cfg-path", "eval_configs/minigpt4_tiny_eval.yaml", *args])
    return exit_info.value.code


def test_demo_port_taken_is_an_error_before_the_model_loads(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = run_demo_main(monkeypatch, "--server-port", str(port))
    assert code == (
        f"--server-port {port}: 127.0.0.1:{port} cannot be used (Address already in use); "
        "stop the program that holds it, or choose another port with --server-port"
    )


def test_demo_port_out_of_range_is_a_usage_error(monkeypatch, capsys):
    assert run_demo_main(monkeypatch, "--server-port", "99999") == 2
    assert "argument --server-port: 99999 is not a port number (1-65535)" in capsys.readouterr().err


def test_demo_default_port_taken_is_an_error_not_a_move(tmp_path):
    """No --server-port: the default port (here $GRADIO_SERVER_PORT, so that a real 7860 on
    this machine is left alone) is taken, and demo.py stops instead of serving on the next."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = [sys.executable, "demo.py", "--cfg-path", "eval_configs/minigpt4_tiny_eval.yaml",
               "--device", "cpu"]  # fmt: skip
        env = {**ENV, "GRADIO_SERVER_PORT": str(port)}
        result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=SUBPROCESS_TIMEOUT_S)  # fmt: skip
    assert result.returncode == 1
    assert f"--server-port {port}: 127.0.0.1:{port} cannot be used" in result.stderr
    assert "Initializing Chat" not in result.stderr + result.stdout
    assert "Running on" not in result.stderr + result.stdout


# --- the batch command's --out (rows 14, 15) --------------------------------------------------


@pytest.fixture(scope="module")
def batch_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    for i in range(3):
        Image.new("RGB", (40, 30), (60 * i, 90, 200 - 50 * i)).save(root / f"img{i}.png")
    cfg = OmegaConf.create(
        {
            "model": tiny_model_config(stage=2),
            "datasets": {
                "cc_sbu_align": {"vis_processor": {"train": {"name": "blip2_image_eval"}}}
            },
            "run": {"task": "image_text_pretrain"},
        }
    )
    OmegaConf.save(cfg, root / "tiny_eval.yaml")
    return root


def batch_args(inputs: Path, out: Path) -> list[str]:
    return ["--cfg-path", str(inputs / "tiny_eval.yaml"), "--images", str(inputs), "--out",
            str(out), "--device", "cpu", "--batch-size", "1", "--max-new-tokens", "3"]  # fmt: skip


@pytest.mark.parametrize("where", ["under a file", "a folder"])
def test_inference_out_that_cannot_be_written_fails_before_loading(batch_inputs, tmp_path,
                                                                   monkeypatch, where):  # fmt: skip
    from minigpt4 import inference
    from minigpt4.common.output_files import OutputError
    from minigpt4.conversation import loading

    def no_model(*_args, **_kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(loading, "build_model_and_processor", no_model)
    (tmp_path / "a_file").write_text("")
    out = tmp_path / "a_file" / "answers.jsonl" if where == "under a file" else tmp_path
    with pytest.raises(OutputError) as error:
        inference.main(batch_args(batch_inputs, out))
    if where == "a folder":
        assert str(error.value) == f"--out {out}: is a folder, not a file; e.g. {out}/answers.jsonl"
    else:
        assert str(error.value) == f"--out {out}: {tmp_path / 'a_file'} is a file, not a folder"


def test_inference_failure_keeps_the_answers_so_far(batch_inputs, tmp_path, monkeypatch, caplog):
    from minigpt4 import inference

    real, calls = inference.answer_images, []

    def fails_on_the_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(inference, "answer_images", fails_on_the_third_batch)
    out = tmp_path / "answers.jsonl"
    with pytest.raises(RuntimeError, match="simulated"):
        inference.main(batch_args(batch_inputs, out))
    partial = Path(f"{out}.partial")
    assert not out.exists()
    records = [json.loads(line) for line in partial.read_text().splitlines()]
    assert [Path(r["image"]).name for r in records] == ["img0.png", "img1.png"]
    assert f"Stopped early: 2 answers so far are in {partial}" in messages(caplog)


def test_inference_output_file_modes(batch_inputs, tmp_path):
    from minigpt4 import inference

    out = tmp_path / "answers.jsonl"
    previous = os.umask(0o022)
    try:
        inference.main(batch_args(batch_inputs, out))
    finally:
        os.umask(previous)
    assert oct(out.stat().st_mode & 0o777) == oct(0o644)  # like every other output, not 0600
    assert len(out.read_text().splitlines()) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.jsonl"]


# --- what already worked, kept working --------------------------------------------------------


def test_still_missing_weights_are_listed_before_loading(tmp_path, caplog):
    align = write_align_folder(tmp_path / "align", n=2)
    from tests.train_helpers import write_stage2_config

    cfg = write_stage2_config(tmp_path / "s2.yaml", align, tmp_path / "out")
    missing = tmp_path / "nope" / "eva_vit_g.pth"
    with caplog.at_level(logging.INFO), pytest.raises(FileNotFoundError) as err:
        train.main(["--cfg-path", str(cfg), "--options", f"model.vit_model_path={missing}"])
    assert "1 weight file(s) needed by the model config are missing" in str(err.value)
    assert f"model.vit_model_path: {missing}: not found" in str(err.value)
    assert "Loading VIT" not in messages(caplog)


def test_still_crafted_model_ckpt_is_refused_unexecuted(tmp_path):
    from minigpt4.models.mini_gpt4 import MiniGPT4
    from minigpt4.models.weights import CheckpointError

    path = tmp_path / "minigpt4.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": Payload(tmp_path / "pwned")}, f, protocol=2)
    with pytest.raises(CheckpointError) as err:
        MiniGPT4.from_config(tiny_model_config(ckpt=str(path)))
    assert f"model.ckpt: {path}: refused to unpickle it: it holds a reference to" in str(err.value)
    assert not (tmp_path / "pwned").exists()


def test_still_corrupt_shards_and_images_are_skipped_with_a_warning(tmp_path, caplog):
    from minigpt4.datasets.datasets.image_text_webdataset import ImageTextStream
    from minigpt4.processors import Blip2ImageEvalProcessor, BlipCaptionProcessor

    write_shards(tmp_path, n_shards=2, per_shard=4, corrupt=((0, 1),))
    broken = tmp_path / "00001.tar"
    broken.write_bytes(broken.read_bytes()[:1500])  # a shard cut short
    urls = [str(tmp_path / "00000.tar"), str(broken)]
    stream = ImageTextStream(urls, 0, "laion", Blip2ImageEvalProcessor(image_size=32),
                             BlipCaptionProcessor())  # fmt: skip
    with caplog.at_level(logging.WARNING):
        samples = [s for _, s in zip(range(20), stream)]
    assert len(samples) == 20 and all(s["image"].shape == (3, 32, 32) for s in samples)
    warned = messages(caplog)
    assert "dataset 'laion': skipping a sample that cannot be read: url=" in warned
    assert "key=000000001 (ImageLoadError" in warned and "00000.tar" in warned


def test_still_empty_shards_raise_instead_of_spinning(tmp_path):
    import tarfile

    from minigpt4.datasets.datasets.image_text_webdataset import ImageTextStream

    with tarfile.open(tmp_path / "00000.tar", "w"):
        pass
    stream = ImageTextStream([str(tmp_path / "00000.tar")], 0, "cc_sbu", None, None)
    expected = r"dataset 'cc_sbu': 100 shards in a row gave no sample \(last: .*00000.tar\); are"
    with pytest.raises(RuntimeError, match=expected):
        next(iter(stream))


def test_still_run_key_typos_are_errors(stage1, tmp_path):
    with pytest.raises(
        ConfigError, match=r"unknown key 'run.max_epochs'. Did you mean 'max_epoch'"
    ):
        run_train(stage1["cfg"], tmp_path / "out", "run.max_epochs=3")


def test_resume_that_cannot_be_exact_says_why_in_one_warning(stage1, tmp_path):
    """Saved with num_workers 0, resumed with 2: the streams cannot continue where they were."""
    log = run_train(stage1["cfg"], tmp_path / "out", f"run.resume_ckpt_path={stage1['latest']}",
                    "run.num_workers=2")  # fmt: skip
    warnings = [line for line in log if "cannot be exact" in line]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"Resuming from {stage1['latest']} cannot be exact: dataset ")
    assert (
        "was read by 1 DataLoader worker(s), now by 2: its stream of epoch 0 starts again"
        in (warnings[0])
    )
