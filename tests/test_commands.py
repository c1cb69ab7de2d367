"""The console scripts of pyproject.toml run their commands (minigpt4/commands.py)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import tomllib

from minigpt4 import commands

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_the_main_commands_are_console_scripts():
    assert set(SCRIPTS) == {
        "minigpt4-demo",
        "minigpt4-demo-v2",
        "minigpt4-train",
        "minigpt4-inference",
        "minigpt4-serve",
        "minigpt4-evaluate",
    }


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_console_script_runs_its_command(name, monkeypatch, capsys):
    module, function = SCRIPTS[name].split(":")
    entry = getattr(importlib.import_module(module), function)
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    with pytest.raises(SystemExit) as done:
        entry()
    assert done.value.code == 0
    assert "--cfg-path" in capsys.readouterr().out


def test_console_script_errors_are_messages(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", ["minigpt4-train", "--cfg-path", str(tmp_path / "no.yaml")])
    with pytest.raises(SystemExit) as done:
        commands.train()
    assert done.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"minigpt4-train: configuration file not found: {tmp_path / 'no.yaml'}")
    assert "Traceback" not in err


def test_a_script_outside_a_checkout_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(commands, "CHECKOUT", tmp_path)
    with pytest.raises(SystemExit) as done:
        commands.load_script("demo.py", "minigpt4-demo")
    message = str(done.value.code)
    assert message.startswith(f"minigpt4-demo: {tmp_path / 'demo.py'} not found")
    assert "pip install -e ." in message
