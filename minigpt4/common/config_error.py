"""The error every configuration problem raises, and the "did you mean" hint it often carries.

Its own module so that the config loader and the typed sections it checks
(:mod:`minigpt4.common.run_config`) share it without importing each other.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConfigError(ValueError):
    """A configuration problem, with the file, key or value and what to do about it."""


def nearest(name: str, candidates: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the candidate closest to ``name``, or "" when none is close."""
    match = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.5)
    return f" Did you mean '{match[0]}'?" if match else ""
