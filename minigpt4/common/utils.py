"""Small helpers shared across the package: run ids and config path resolution."""

from __future__ import annotations

import os
from datetime import datetime

from minigpt4.common.registry import registry


def now() -> str:
    """Job id as the original makes it: ``%Y%m%d%H%M`` without its last digit (10-minute bins)."""
    return datetime.now().strftime("%Y%m%d%H%M")[:-1]


def is_url(value: str) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def resolve_path(path: str) -> str:
    """Resolve a path written in a config file.

    Absolute paths and URLs are returned unchanged. A relative path is taken relative to the
    current directory when it exists there (the original's behaviour: users run from the
    repository root), otherwise relative to the repository root, so shipped configs also work
    when started from elsewhere. A path found in neither place is returned relative to the
    current directory, so error messages show what the user wrote.
    """
    if not path or is_url(path) or os.path.isabs(path):
        return path
    path = os.path.expanduser(path)
    if os.path.isabs(path) or os.path.exists(path):
        return os.path.abspath(path)
    in_repo = os.path.join(registry.get_path("repo_root"), path)
    if os.path.exists(in_repo):
        return in_repo
    return os.path.abspath(path)
