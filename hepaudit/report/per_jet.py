"""per_jet.root: one entry per audited jet, in input order, as a friend of the input tree.

:class:`PerJetWriter` writes a classic TTree ``hepaudit`` chunk by chunk (so memory does
not grow with the number of jets). The tree's branches are fixed by the first chunk;
a column missing from a later chunk (an explainer that failed half-way) is filled with
NaN. A column may hold a fixed-shape array per jet (an attribution in a model input's own
shape, for models with thousands of features): it is written as one array branch, which
ROOT and uproot read back as (jets, ...) without a branch per entry. The file is written
under a temporary name and renamed into place on close, so a crash never leaves a
half-written per_jet.root.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import uproot

TREE_NAME = "hepaudit"


class PerJetWriter:
    """Writes per-jet columns chunk by chunk; call :meth:`close` to put the file in place."""

    def __init__(self, path: Path, tree: str = TREE_NAME) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self.tree_name = tree
        self._file: uproot.WritableDirectory | None = None
        self._tree = None
        self._columns: dict[str, np.dtype] = {}
        self.dropped: set[str] = set()
        self.entries = 0

    def write(self, columns: dict[str, np.ndarray]) -> None:
        if self._tree is None:
            self._file = uproot.recreate(self.tmp)
            self._columns = {k: _branch_dtype(v) for k, v in columns.items()}
            self._tree = self._file.mktree(self.tree_name, dict(self._columns))
        n = len(next(iter(columns.values())))
        out = {}
        for name, dtype in self._columns.items():
            value = columns.get(name)
            if value is None:
                out[name] = np.full((n, *dtype.shape), np.nan, dtype.base)
            else:
                out[name] = np.asarray(value, dtype=dtype.base)
        self.dropped |= set(columns) - set(self._columns)
        assert self._tree is not None
        self._tree.extend(out)
        self.entries += n

    def add_tree(self, name: str, columns: dict[str, np.ndarray]) -> None:
        """Write a further tree of its own (e.g. ``shap`` for a subsample) into the same file."""
        if name == self.tree_name:
            raise ValueError(f"the tree name {name!r} is reserved for the per-jet tree")
        if self._file is None:
            self._file = uproot.recreate(self.tmp)
        types = {k: _branch_dtype(v) for k, v in columns.items()}
        tree = self._file.mktree(name, types)
        if columns and len(next(iter(columns.values()))):
            tree.extend({k: np.asarray(v, dtype=types[k]) for k, v in columns.items()})

    def close(self) -> bool:
        """Finish the file and move it into place; False when nothing was written."""
        if self._file is None:
            return False
        self._file.close()
        with open(self.tmp, "rb") as handle:  # durable before the rename, like atomic_write
            os.fsync(handle.fileno())
        os.replace(self.tmp, self.path)
        self._file = None
        return True

    def abort(self) -> None:
        """Drop the temporary file (after an error or Ctrl-C)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.tmp.exists():
            self.tmp.unlink()


def _branch_dtype(values: np.ndarray) -> np.dtype:
    """The branch type: a scalar type, or (type, per-jet shape) for an array branch."""
    array = np.asarray(values)
    dtype = array.dtype
    base: np.dtype[Any]
    if dtype.kind == "b":
        base = np.dtype(np.bool_)
    elif dtype.kind in "iu":
        base = np.dtype(np.int64) if dtype.itemsize > 4 else np.dtype(np.int32)
    else:
        base = np.dtype(np.float32) if dtype == np.float32 else np.dtype(np.float64)
    return np.dtype((base, array.shape[1:])) if array.ndim > 1 else base
