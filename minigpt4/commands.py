"""The console scripts ``pip install -e .`` puts on the environment's PATH (``pyproject.toml``).

Each runs the same ``main`` as its long form, through :func:`minigpt4.common.cli.run_command`
(errors as messages, ``--debug``):

- ``minigpt4-demo``: ``python demo.py``
- ``minigpt4-demo-v2``: ``python demo_v2.py`` (the MiniGPT-v2 demo)
- ``minigpt4-train``: ``python train.py`` (one process; ``torchrun --no-python minigpt4-train``
  or ``torchrun train.py`` for several)
- ``minigpt4-inference``: ``python -m minigpt4.inference``
- ``minigpt4-serve``: ``python -m minigpt4.serve``
- ``minigpt4-evaluate``: ``python -m minigpt4.evaluate``

``demo.py``, ``demo_v2.py`` and ``train.py`` stay scripts at the repository root, where the
original has them, so their commands read them from the checkout the package is installed from
(editable install).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from minigpt4.common.cli import run_command

CHECKOUT = Path(__file__).resolve().parents[1]


def load_script(name: str, prog: str) -> ModuleType:
    """Import the checkout's script ``name`` (``demo.py``) as a module, without running it."""
    path = CHECKOUT / name
    if not path.is_file():
        sys.exit(
            f"{prog}: {path} not found. This command runs the repository's {name}: install the "
            f"package from a checkout with `pip install -e .`, or run `python {name}` there."
        )
    spec = importlib.util.spec_from_file_location(f"minigpt4_{path.stem}_script", path)
    module = importlib.util.module_from_spec(spec)
    # registered first, as an import would: dataclasses look their module up in sys.modules
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _script_main(name: str, prog: str) -> Callable[..., Any]:
    return load_script(name, prog).main


def demo() -> None:
    run_command(_script_main("demo.py", "minigpt4-demo"), "minigpt4-demo")


def demo_v2() -> None:
    run_command(_script_main("demo_v2.py", "minigpt4-demo-v2"), "minigpt4-demo-v2")


def train() -> None:
    run_command(_script_main("train.py", "minigpt4-train"), "minigpt4-train")


def inference() -> None:
    from minigpt4.inference import main

    run_command(main, "minigpt4-inference")


def serve() -> None:
    from minigpt4.serve.server import main

    run_command(main, "minigpt4-serve")


def evaluate() -> None:
    from minigpt4.evaluate import main

    run_command(main, "minigpt4-evaluate")
