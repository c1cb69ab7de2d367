"""The processor interface: a callable built from its YAML block (``name: ...`` plus options)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def _identity(item: Any) -> Any:
    return item


class BaseProcessor:
    """Identity processor; subclasses set ``self.transform`` or override ``__call__``."""

    def __init__(self) -> None:
        # A module-level function, not a lambda: processors must pickle for DataLoader workers.
        self.transform = _identity

    def __call__(self, item: Any) -> Any:
        return self.transform(item)

    @classmethod
    def from_config(cls, cfg: DictConfig | None = None) -> BaseProcessor:
        return cls()

    def build(self, **kwargs: Any) -> BaseProcessor:
        """Build a processor of this class from keyword options (as a YAML block would give)."""
        return self.from_config(OmegaConf.create(kwargs))
