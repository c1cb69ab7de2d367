"""Every command's ``--help`` answers before torch is imported, and every command that loads a
model takes the same arguments (one definition: :mod:`minigpt4.common.model_args`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# (how it is run, whether it loads a model from --cfg-path/--options/--device/--gpu-id)
COMMANDS = {
    "demo.py": ("path", "demo.py", True),
    "demo_v2.py": ("path", "demo_v2.py", True),
    "train.py": ("path", "train.py", False),
    "python -m minigpt4.inference": ("module", "minigpt4.inference", True),
    "python -m minigpt4.serve": ("module", "minigpt4.serve", True),
    "python -m minigpt4.evaluate": ("module", "minigpt4.evaluate", True),
    "python -m minigpt4.models.train_memory": ("module", "minigpt4.models.train_memory", False),
    "python -m minigpt4.evaluation.lmms_eval_data": (
        "module",
        "minigpt4.evaluation.lmms_eval_data",
        False,
    ),
}

# Runs the command's --help in a fresh interpreter, then reports what was imported.
PROBE = """
import json, runpy, sys
kind, target = sys.argv[1], sys.argv[2]
sys.argv = [target, "--help"]
sys.path.insert(0, ".")
try:
    if kind == "path":
        runpy.run_path(target, run_name="__main__")
    else:
        runpy.run_module(target, run_name="__main__", alter_sys=True)
except SystemExit as exit:
    code = exit.code
else:
    code = "no exit"
heavy = sorted(m for m in ("torch", "transformers", "gradio") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}))
"""


def run_help(kind: str, target: str) -> tuple[dict, str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, kind, target],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    *help_lines, report = done.stdout.strip().splitlines()
    return json.loads(report), "\n".join(help_lines)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_answers_before_torch_is_imported(command):
    kind, target, loads_model = COMMANDS[command]
    report, help_text = run_help(kind, target)
    assert report["code"] == 0, (command, report)
    assert report["heavy"] == [], f"{command} --help imported {report['heavy']}"
    assert "usage:" in help_text
    if loads_model:
        for flag in ("--cfg-path", "--options", "--device", "--gpu-id"):
            assert flag in help_text, (command, flag)


def test_the_original_demo_flags_parse():
    """The original's ``python demo.py --cfg-path ... --gpu-id 0 --options k=v`` still works."""
    import demo

    args = demo.parse_args(["--cfg-path", "c.yaml", "--gpu-id", "1", "--options", "a=1", "b=2"])
    assert (args.cfg_path, args.gpu_id, args.options, args.device) == (
        "c.yaml",
        1,
        ["a=1", "b=2"],
        None,
    )


def test_the_original_demo_v2_flags_parse():
    """The original's ``python demo_v2.py`` reads its v2 config when no --cfg-path is given, and
    takes demo.py's page flags."""
    import demo_v2

    args = demo_v2.parse_args([])
    assert (args.cfg_path, args.gpu_id, args.options) == (
        "eval_configs/minigptv2_eval.yaml",
        0,
        None,
    )
    args = demo_v2.parse_args(["--server-port", "8123", "--share", "--seed", "3"])
    assert (args.server_name, args.server_port, args.share, args.seed) == (
        "127.0.0.1",
        8123,
        True,
        3,
    )
    with pytest.raises(SystemExit):
        demo_v2.parse_args(["--server-port", "70000"])


def test_every_model_command_reads_the_same_arguments():
    """One parser definition: the same flags give the same values in every command."""
    import demo
    import demo_v2
    import train
    from minigpt4 import evaluate, inference
    from minigpt4.serve import server

    shared = ["--cfg-path", "c.yaml", "--options", "model.ckpt=x.pth", "--device", "cpu"]
    parsed = [
        demo.parse_args([*shared, "--gpu-id", "2"]),
        demo_v2.parse_args([*shared, "--gpu-id", "2"]),
        inference.parse_args([*shared, "--gpu-id", "2", "--images", "i", "--out", "o.jsonl"]),
        server.parse_args([*shared, "--gpu-id", "2"]),
        evaluate.parse_args(
            [*shared, "--gpu-id", "2", "--benchmark", "mme", "--data", "d", "--out", "o.json"]
        ),
    ]
    for args in parsed:
        assert (args.cfg_path, args.options, args.device, args.gpu_id) == (
            "c.yaml",
            ["model.ckpt=x.pth"],
            "cpu",
            2,
        )
    args = train.parse_args(shared[:4])
    assert (args.cfg_path, args.options) == ("c.yaml", ["model.ckpt=x.pth"])
    with pytest.raises(SystemExit):
        demo.parse_args(["--cfg-path", "c.yaml", "--device", "tpu"])


def test_a_taken_port_names_the_commands_flags():
    """One way to take a port (:func:`minigpt4.serve.ports.listen`), with each command's flags
    in its message."""
    from minigpt4.serve.ports import listen

    held = listen("127.0.0.1", 0)
    port = held.getsockname()[1]
    try:
        with pytest.raises(SystemExit) as info:
            listen("127.0.0.1", port, "--server-name", "--server-port")
        assert str(info.value.code).startswith(f"--server-port {port}: 127.0.0.1:{port} cannot")
        assert str(info.value.code).endswith("choose another port with --server-port")
        with pytest.raises(SystemExit) as info:
            listen("no-such-host.invalid", port)
        assert str(info.value.code).startswith("--host no-such-host.invalid: not an address")
    finally:
        held.close()
