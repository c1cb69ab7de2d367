"""Reading pickle files without running code.

REFER's ``refs(unc).p`` is a pickled list of dicts of strings and numbers. ``pickle.load`` would
run whatever a file asks for (any importable callable), so a downloaded file is read here by an
unpickler that builds builtin containers and scalars only, and refuses every global.
"""

from __future__ import annotations

import io
import pickle
from typing import Any


class UnsafePickleError(ValueError):
    """A pickle file that needs code (a class or function) to be loaded."""


class _DataOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, path: str) -> None:
        super().__init__(file, encoding="latin1")  # REFER's files were written by Python 2
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        raise UnsafePickleError(
            f"{self.path}: refused to load {module}.{name}: this pickle needs code to be run, "
            "and only lists, dicts, tuples, strings and numbers are read. Re-save the file "
            "with plain Python containers (or convert it to JSON) from a trusted source."
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.path}: refused a persistent id {pid!r} (not plain data)")


def load_data_pickle(path: str) -> Any:
    """The plain data of the pickle file at ``path`` (containers, strings, numbers, None).

    Raises :class:`UnsafePickleError` for a file that would import anything and ``ValueError``
    for a file that is not a pickle.
    """
    with open(path, "rb") as f:
        try:
            return _DataOnlyUnpickler(f, path).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
            raise ValueError(f"{path} is not a readable pickle file: {err}") from err
