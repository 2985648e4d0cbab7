"""Per-jet values an explainer keeps for the whole audit, in large blocks of their own.

ΔAUC keeps every occluded score until its exact AUCs: (units, jets) float32, 690 MB for
TopoDNN's 94 units at 2M jets. Kept as one (units, n) array per chunk, those ~10 MB arrays
end up on the allocator's heap between the chunk's temporaries (glibc serves anything
below its mmap threshold, which rises to 32 MB after the first large free, from the heap),
and the holes the temporaries leave between them are never returned to the system: the
local 2M-jet audit held ~450 MB more than its state (docs/dask.md, "Memory").
:class:`ColumnBlocks` copies each chunk's columns into blocks of at least
``BLOCK_BYTES``, which the allocator maps on their own; pages of a block not yet written
are not resident, so a half-filled last block costs only what it holds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BLOCK_BYTES = 64 << 20


class ColumnBlocks:
    """A growing (rows, n) array, appended to chunk by chunk and read back one row at a time."""

    def __init__(self, rows: int, dtype: Any = np.float32, block_bytes: int = BLOCK_BYTES) -> None:
        self.rows = rows
        self.dtype = np.dtype(dtype)
        self.block_bytes = block_bytes
        self._parts: list[np.ndarray] = []  # filled (rows, m) views, in order
        self._open: np.ndarray | None = None  # the block the last part lies in, while it has room
        self._start = 0  # where the last part begins in the open block
        self._fill = 0  # columns of the open block written

    def __len__(self) -> int:
        return sum(p.shape[1] for p in self._parts)

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self._parts)

    def append(self, *values: np.ndarray) -> None:
        """Copy in (r, n) arrays stacked on each other, their rows adding up to ``rows``
        (cast to the store's dtype): e.g. one row of scores and the (units, n) occluded ones."""
        n = values[0].shape[1] if values and values[0].ndim == 2 else -1
        if any(v.ndim != 2 or v.shape[1] != n for v in values) or sum(v.shape[0] for v in values) != self.rows:
            raise ValueError(f"expected ({self.rows}, n) values in all, got {[v.shape for v in values]}")
        if n == 0:
            return
        if self._open is None or self._fill + n > self._open.shape[1]:
            columns = max(n, self.block_bytes // max(self.rows * self.dtype.itemsize, 1))
            self._open = np.empty((self.rows, columns), self.dtype)
            self._start = self._fill = 0
            self._parts.append(self._open[:, :0])
        row = 0
        for v in values:
            self._open[row:row + v.shape[0], self._fill:self._fill + n] = v
            row += v.shape[0]
        self._fill += n
        self._parts[-1] = self._open[:, self._start:self._fill]

    def row(self, k: int) -> np.ndarray:
        """Row k over every column appended, as one new array."""
        if not self._parts:
            return np.zeros(0, self.dtype)
        return np.concatenate([p[k] for p in self._parts])

    def merged(self, other: ColumnBlocks) -> ColumnBlocks:
        """This store's columns followed by ``other``'s (sharing their memory)."""
        if other.rows != self.rows:
            raise ValueError(f"cannot merge stores of {self.rows} and {other.rows} rows")
        out = ColumnBlocks(self.rows, self.dtype, self.block_bytes)
        out._parts = self._parts + other._parts
        return out

    def __getstate__(self) -> dict[str, Any]:
        # what is sent between Dask processes: the filled columns only, not the blocks' free room
        return {"rows": self.rows, "dtype": self.dtype.str, "block_bytes": self.block_bytes,
                "parts": [np.ascontiguousarray(p) for p in self._parts]}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["rows"], np.dtype(state["dtype"]), state["block_bytes"])  # type: ignore[misc]
        self._parts = list(state["parts"])
