"""The README's set-up, quickstart and first-hour commands, run as a new user pastes them.

Every fenced block of those sections runs in a fresh ``bash`` (Python blocks through the
environment's ``python``), in order, from a copy of the checkout (its top-level entries linked
into a temporary folder, so ``output/`` and ``photo.png`` land there) with a temporary HOME. The
environment is the one running the tests, linked as ``.venv``: the README's set-up command is what
``.ci/run`` ran to make it, which a test checks instead of installing everything again. Each later
block starts with the README's activation block, as a new shell would.

Servers (``minigpt4-demo``, ``minigpt4-serve``) are started and probed, stay up for the blocks
that talk to their port and are stopped before the next one. Three things differ from a paste:
so that the test never takes a port another program holds, the demo gets a free port through
``$GRADIO_SERVER_PORT`` (which it reads), the server ``--port`` and its clients that port; and
each training command gets ``run.iters_per_epoch`` (:data:`SHORT_RUN_ITERS`), which keeps this
test to minutes (``tests/test_tiny_world_learns.py`` runs both stages at full length and holds
their results to the targets).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from minigpt4.evaluation.identity import content_hash
from tests.process_helpers import free_port, serving

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
SECTIONS = ("Set up", "Quickstart", "The first hour")
SERVE_PORT = 8000  # minigpt4-serve's default, which the README's clients use
BLOCK_TIMEOUT_S = 600
SHORT_RUN_ITERS = 20
# Left out of the checkout copy: what the commands write, and environments.
NOT_COPIED = {"output", ".git", "photo.png", "answers.jsonl"}


@dataclass
class Block:
    language: str  # "bash" or "python"
    text: str


def readme_blocks() -> list[Block]:
    """The fenced blocks of :data:`SECTIONS`, in order."""
    text = README.read_text()
    blocks = []
    for title in SECTIONS:
        assert f"\n## {title}\n" in text, f"README.md has no '## {title}' section"
        section = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
        for language, body in re.findall(r"^```(\w*)\n(.*?)^```$", section, re.M | re.S):
            blocks.append(Block(language, body))
    return blocks


def setup_blocks() -> tuple[Block, Block]:
    """The two set-up commands: create the environment, activate it."""
    first, second = readme_blocks()[:2]
    assert "pip install" in first.text and "venv" in first.text, first.text
    assert second.text.strip() == "source .venv/bin/activate", second.text
    return first, second


def _pip_args(command: str) -> list[str]:
    """What ``pip install`` is given, whichever way pip is called (``-q`` aside)."""
    args = command.split("pip install", 1)[1].split("&&")[0].split()
    return [a for a in args if a != "-q"]


def test_setup_command_is_what_ci_runs():
    """`.ci/run` builds the environment the rest of the suite uses with the README's command."""
    create, _ = setup_blocks()
    assert create.text.startswith("python3.11 -m venv .venv && .venv/bin/pip install ")
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    ci_install = [line for line in ci.splitlines() if "pip install -q -r requirements" in line]
    assert len(ci_install) == 1, ci_install
    assert _pip_args(ci_install[0]) == _pip_args(create.text)
    assert "-e" in _pip_args(create.text)  # the project itself, with its commands
    assert '"$PYTHON" -m venv .venv' in ci


def test_readme_sections_hold_only_runnable_blocks():
    blocks = readme_blocks()
    assert {b.language for b in blocks} == {"bash", "python"}
    # every command is there once: activation is said once, the rest depend on it
    assert sum("source .venv/bin/activate" in b.text for b in blocks) == 1


def environment_prefix() -> Path:
    """The virtual environment running the tests, which must hold the project's commands."""
    prefix = Path(sys.prefix)
    missing = [
        name
        for name in ("activate", "minigpt4-demo", "minigpt4-serve", "minigpt4-evaluate")
        if not (prefix / "bin" / name).exists()
    ]
    if missing:
        pytest.fail(
            f"{prefix} lacks {', '.join(missing)}: run the tests in the environment the README's "
            "set-up command makes (`.venv/bin/pip install -r requirements.txt -e .`)"
        )
    return prefix


@pytest.fixture(scope="module")
def user_checkout(tmp_path_factory) -> Path:
    """A folder that looks like a fresh checkout with its `.venv`, where outputs land apart."""
    root = tmp_path_factory.mktemp("checkout")
    for entry in REPO_ROOT.iterdir():
        if entry.name not in NOT_COPIED and not entry.name.startswith(".venv"):
            (root / entry.name).symlink_to(entry)
    (root / ".venv").symlink_to(environment_prefix())
    (root / "home").mkdir()
    return root


def shell_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(HOME=str(root / "home"), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    return env


def run_block(block: Block, activate: str, root: Path, env: dict[str, str]) -> str:
    """Run one block in a fresh bash after the activation block; its output, or a failure."""
    if block.language == "python":
        script = f"{activate}\npython - <<'README_PYTHON'\n{block.text}README_PYTHON\n"
    else:
        script = f"{activate}\nset -e\n{block.text}"
    proc = subprocess.run(["bash", "-c", script], cwd=root, env=env, capture_output=True,
                          text=True, timeout=BLOCK_TIMEOUT_S)  # fmt: skip
    output = proc.stdout + proc.stderr
    failed = f"README block failed ({proc.returncode}):\n{block.text}\n{output[-5000:]}"
    assert proc.returncode == 0, failed
    return proc.stdout


@contextlib.contextmanager
def start_server(block: Block, activate: str, root: Path, env: dict[str, str]) -> Iterator[int]:
    """Start a server block (``exec``, so that stopping it stops the server); yield its port."""
    port = free_port()
    command = block.text.strip()
    if command.startswith("minigpt4-demo "):
        env = dict(env, GRADIO_SERVER_PORT=str(port))
        url = f"http://127.0.0.1:{port}/"
    else:
        command += f" --port {port}"
        url = f"http://127.0.0.1:{port}/health"
    script = f"{activate}\nexec {command}"
    log = root / f"server_{port}.log"
    with serving(["bash", "-c", script], url, log, env=env, cwd=root):
        if command.startswith("minigpt4-demo "):
            with urllib.request.urlopen(url, timeout=30) as page:
                assert "MiniGPT-4" in page.read().decode()
        yield port


def shorten_training(text: str) -> str:
    """Each ``torchrun ... train.py`` line of ``text`` with ``run.iters_per_epoch`` set short."""
    lines = []
    for line in text.splitlines():
        if line.startswith("torchrun ") and " train.py " in line:
            option = f"run.iters_per_epoch={SHORT_RUN_ITERS}"
            line += f" {option}" if " --options " in line else f" --options {option}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def is_server(block: Block) -> bool:
    return block.language == "bash" and block.text.split(" ", 1)[0] in (
        "minigpt4-demo",
        "minigpt4-serve",
    )


@pytest.mark.slow
def test_readme_commands_run_as_pasted(user_checkout):
    """A few minutes on 2 cores: the servers' and the stages' start-ups, the data, the MME run."""
    root, env = user_checkout, shell_env(user_checkout)
    _, activation = setup_blocks()
    outputs = []
    with contextlib.ExitStack() as servers:
        server_port = None
        for block in readme_blocks()[2:]:
            if server_port is not None and f"127.0.0.1:{SERVE_PORT}" not in block.text:
                servers.close()  # the blocks that talk to the last server are done
                server_port = None
            if is_server(block):
                server_port = servers.enter_context(start_server(block, activation.text, root, env))
                continue
            text = shorten_training(block.text)
            if server_port is not None:
                text = text.replace(f"127.0.0.1:{SERVE_PORT}", f"127.0.0.1:{server_port}")
            outputs.append(run_block(Block(block.language, text), activation.text, root, env))
    check_results(root, outputs)


def check_results(root: Path, outputs: list[str]) -> None:
    """What the first hour promises: the red circle described, the trained model evaluated
    (its scores after a short run are not the point here)."""
    described = [o for o in outputs if "red circle" in o]
    assert len(described) >= 2, outputs  # from Python and from the server
    answers = [json.loads(line) for line in (root / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 1 and "red circle" in answers[0]["answer"], answers
    mme = json.loads((root / "output" / "tiny_mme.json").read_text())
    (trained,) = (root / "output" / "minigpt4_tiny_stage2").glob("*/checkpoint_0.pth")
    assert mme["config"]["weights"]["model.ckpt"] == content_hash(str(trained))
    assert len(mme["items"]) == 5 * 100 * 2 and 0 <= mme["scores"]["acc"] <= 100
    log = (trained.parent / "log.txt").read_text()
    assert f'"iters_per_epoch": {SHORT_RUN_ITERS}' in log
