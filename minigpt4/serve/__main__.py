"""``python -m minigpt4.serve --cfg-path ...``: see :mod:`minigpt4.serve.server`."""

from minigpt4.common.cli import run_command
from minigpt4.serve.server import main

run_command(main, "python -m minigpt4.serve")
