"""``python -m minigpt4.serve --cfg-path ...``: see :mod:`minigpt4.serve.server`."""

from minigpt4.serve.server import main

main()
