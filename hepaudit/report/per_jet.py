"""per_jet.root: one entry per audited jet, in input order, as a friend of the input tree.

:class:`PerJetWriter` writes a classic TTree ``hepaudit`` chunk by chunk (so memory does
not grow with the number of jets). The tree's branches are fixed by the first chunk;
a column missing from a later chunk (an explainer that failed half-way) is filled with
NaN. A column may hold a fixed-shape array per jet (an attribution in a model input's own
shape, for models with thousands of features): it is written as one array branch, which
ROOT and uproot read back as (jets, ...) without a branch per entry. The file is written
under a temporary name and renamed into place on close, so a crash never leaves a
half-written per_jet.root. :class:`PerJetColumns` keeps the same columns in memory instead
(``hepaudit.audit(out=None)``'s ``report.per_jet``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import uproot

from hepaudit.report.branch_titles import branch_title

TREE_NAME = "hepaudit"


class PerJetSink:
    """Where per-jet columns go, chunk by chunk: the branches are fixed by the first chunk."""

    def __init__(self, tree: str = TREE_NAME) -> None:
        self.tree_name = tree
        self._columns: dict[str, np.dtype] = {}
        self.dropped: set[str] = set()
        self.entries = 0

    def write(self, columns: dict[str, np.ndarray]) -> None:
        if not self._columns:
            self._columns = {k: _branch_dtype(v) for k, v in columns.items()}
            self._begin(self._columns)
        n = len(next(iter(columns.values())))
        out = {}
        for name, dtype in self._columns.items():
            value = columns.get(name)
            if value is None:
                out[name] = np.full((n, *dtype.shape), np.nan, dtype.base)
            else:
                out[name] = np.asarray(value, dtype=dtype.base)
        self.dropped |= set(columns) - set(self._columns)
        self._extend(out)
        self.entries += n

    def add_tree(self, name: str, columns: dict[str, np.ndarray]) -> None:
        """A further tree of its own (e.g. ``shap`` for a subsample)."""
        if name == self.tree_name:
            raise ValueError(f"the tree name {name!r} is reserved for the per-jet tree")
        types = {k: _branch_dtype(v) for k, v in columns.items()}
        self._add_tree(name, types, {k: np.asarray(v, dtype=types[k].base) for k, v in columns.items()})

    def _begin(self, types: dict[str, np.dtype]) -> None:
        raise NotImplementedError

    def _extend(self, columns: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def _add_tree(self, name: str, types: dict[str, np.dtype], columns: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def close(self) -> bool:
        """Finish; False when nothing was written."""
        raise NotImplementedError

    def abort(self) -> None:
        """Drop what was written (after an error or Ctrl-C)."""
        raise NotImplementedError


class PerJetColumns(PerJetSink):
    """The per-jet tree and further trees kept in memory (``hepaudit.audit(out=None)``), as
    :func:`hepaudit.results.read_per_jet` would read them back from per_jet.root."""

    def __init__(self, tree: str = TREE_NAME) -> None:
        super().__init__(tree)
        self._chunks: list[dict[str, np.ndarray]] = []
        self.trees: dict[str, dict[str, np.ndarray]] = {}

    def _begin(self, types: dict[str, np.dtype]) -> None:
        pass

    def _extend(self, columns: dict[str, np.ndarray]) -> None:
        # owned copies: a column may be a view of a buffer its explainer reuses for the next chunk
        # (the file writer has copied the values out by the time write() returns)
        self._chunks.append({k: np.array(v, copy=True) for k, v in columns.items()})

    def _add_tree(self, name: str, types: dict[str, np.dtype], columns: dict[str, np.ndarray]) -> None:
        self.trees[name] = columns

    def close(self) -> bool:
        return bool(self._chunks or self.trees)

    def abort(self) -> None:
        self._chunks, self.trees = [], {}

    def arrays(self) -> dict[str, Any]:
        """The ``hepaudit`` tree's columns, and every further tree as a dict under its name."""
        out: dict[str, Any] = {name: np.concatenate([c[name] for c in self._chunks])
                               for name in self._columns} if self._chunks else {}
        out.update(self.trees)
        return out


class PerJetWriter(PerJetSink):
    """Writes per-jet columns chunk by chunk to per_jet.root; call :meth:`close` to put the
    file in place."""

    def __init__(self, path: Path, tree: str = TREE_NAME) -> None:
        super().__init__(tree)
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self._file: uproot.WritableDirectory | None = None
        self._tree = None

    def _begin(self, types: dict[str, np.dtype]) -> None:
        self._file = uproot.recreate(self.tmp)
        self._tree = _titled_tree(self._file, self.tree_name, dict(types))

    def _extend(self, columns: dict[str, np.ndarray]) -> None:
        assert self._tree is not None
        self._tree.extend(columns)

    def _add_tree(self, name: str, types: dict[str, np.dtype], columns: dict[str, np.ndarray]) -> None:
        if self._file is None:
            self._file = uproot.recreate(self.tmp)
        tree = _titled_tree(self._file, name, types)
        if columns and len(next(iter(columns.values()))):
            tree.extend(columns)

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


def _titled_tree(file: Any, name: str, types: dict[str, np.dtype]) -> Any:
    """``file.mktree(name, types)`` with its branches titled (:mod:`.branch_titles`).

    uproot's writer has no public way to set a branch title: for this one call, the file's
    directory makes the tree's writer itself, sets the titles in its branch records and only
    then lays the tree's metadata out, once (uproot lays it out in a time that grows with the
    square of the branches: half a second for SHAP's 180). Should a later uproot change those
    internals, the tree is made as uproot makes it, and the titles stay uproot's default (the
    leaf list) rather than the file failing; a test reads them back."""
    try:
        from uproot.writing._cascadetree import Tree

        cascading = file._cascading
        plain = cascading.add_tree
        freesegments = cascading._freesegments
    except (ImportError, AttributeError):
        return file.mktree(name, types)

    def add_tree(sink: Any, tree_name: str, title: str, branch_types: Any, *rest: Any) -> Any:
        try:
            tree = Tree(cascading, tree_name, title, branch_types, freesegments, *rest)
            for datum in tree._branch_data:
                dtype = types.get(datum.get("fName"))
                titled = None if dtype is None else branch_title(datum["fName"], dtype.shape)
                if titled is not None:
                    datum["fTitle"] = titled
        except (AttributeError, KeyError, TypeError):
            return plain(sink, tree_name, title, branch_types, *rest)
        tree.write_anew(sink)
        return tree

    cascading.add_tree = add_tree  # this directory, this call only
    try:
        return file.mktree(name, types)
    finally:
        del cascading.add_tree


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
