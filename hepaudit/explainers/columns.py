"""Per-jet values an explainer keeps for the whole audit, out of the process's memory.

ΔAUC keeps every occluded score until its exact AUCs: (1 + units, jets) float32, 690 MB
for TopoDNN's 94 units at 2M jets, 3.5 GB at 10M. :class:`SpilledColumns` writes each
chunk's columns to an unlinked temporary file (in ``TMPDIR``; it vanishes with the
process, even one that is killed) and reads one row back at a time when the explainer
finishes. The data then lives in the operating system's page cache, which it can evict
and which is not the process's resident memory: a local audit's peak RSS no longer grows
with the number of jets (docs/dask.md, "Memory"), at the cost of writing the state once
and reading it back once (0.7 GB at 2M jets).

Between Dask processes the columns travel as arrays and the receiving side spills them
again; merging stores shares their files.
"""

from __future__ import annotations

import os
import tempfile
import threading
from typing import IO, Any

import numpy as np

_SEEK_LOCK = threading.Lock()  # where os.pread/os.pwrite are missing (Windows): seek, then read or write


def _write_at(file: IO[bytes], data: memoryview, offset: int) -> None:
    if not hasattr(os, "pwrite"):
        with _SEEK_LOCK:
            file.seek(offset)
            file.write(data)
            file.flush()
        return
    while data:  # a single call may write less than asked (e.g. over 2 GB on Linux)
        written = os.pwrite(file.fileno(), data, offset)
        data, offset = data[written:], offset + written


def _read_at(file: IO[bytes], size: int, offset: int) -> bytes:
    if not hasattr(os, "pread"):
        with _SEEK_LOCK:
            file.seek(offset)
            return file.read(size)
    parts = []
    while size > 0:
        data = os.pread(file.fileno(), size, offset)
        if not data:  # end of file: the caller reports the short read
            break
        parts.append(data)
        size, offset = size - len(data), offset + len(data)
    return b"".join(parts)


class SpilledColumns:
    """A growing (rows, n) array, appended to chunk by chunk and read back one row at a time."""

    def __init__(self, rows: int, dtype: Any = np.float32) -> None:
        self.rows = rows
        self.dtype = np.dtype(dtype)
        # (file, offset, columns): each part is a C-ordered (rows, columns) block in its file
        self._parts: list[tuple[IO[bytes], int, int]] = []
        self._file: IO[bytes] | None = None
        self._end = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sum(n for _, _, n in self._parts)

    @property
    def nbytes(self) -> int:
        return len(self) * self.rows * self.dtype.itemsize

    def append(self, *values: np.ndarray) -> None:
        """Write (r, n) arrays stacked on each other, their rows adding up to ``rows`` (cast to
        the store's dtype): e.g. one row of scores and the (units, n) occluded ones."""
        n = values[0].shape[1] if values and values[0].ndim == 2 else -1
        if any(v.ndim != 2 or v.shape[1] != n for v in values) or sum(v.shape[0] for v in values) != self.rows:
            raise ValueError(f"expected ({self.rows}, n) values in all, got {[v.shape for v in values]}")
        if n == 0:
            return
        block = np.concatenate([v.astype(self.dtype, copy=False) for v in values]) if len(values) > 1 \
            else np.ascontiguousarray(values[0], dtype=self.dtype)
        with self._lock:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="hepaudit-columns-")
            _write_at(self._file, block.data.cast("B"), self._end)
            self._parts.append((self._file, self._end, n))
            self._end += block.nbytes

    def _read(self, file: IO[bytes], offset: int, count: int) -> np.ndarray:
        size = count * self.dtype.itemsize
        data = _read_at(file, size, offset)
        if len(data) != size:
            raise OSError(f"spilled columns: read {len(data)} of {size} bytes from the temporary file")
        return np.frombuffer(data, self.dtype)

    def row(self, k: int) -> np.ndarray:
        """Row k over every column appended, as one new array (safe from several threads)."""
        if not 0 <= k < self.rows:
            raise IndexError(f"row {k} of {self.rows}")
        out = np.empty(len(self), self.dtype)
        at = 0
        for file, offset, n in self._parts:
            out[at:at + n] = self._read(file, offset + k * n * self.dtype.itemsize, n)
            at += n
        return out

    def merged(self, other: SpilledColumns) -> SpilledColumns:
        """This store's columns followed by ``other``'s (sharing their files)."""
        if other.rows != self.rows or other.dtype != self.dtype:
            raise ValueError(f"cannot merge ({self.rows}, n) {self.dtype} columns with ({other.rows}, n) {other.dtype}")
        out = SpilledColumns(self.rows, self.dtype)
        out._parts = self._parts + other._parts
        return out

    def __getstate__(self) -> dict[str, Any]:
        # between Dask processes: the columns themselves; the receiver spills them again
        blocks = [self._read(f, o, self.rows * n).reshape(self.rows, n) for f, o, n in self._parts]
        return {"rows": self.rows, "dtype": self.dtype.str, "blocks": blocks}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["rows"], np.dtype(state["dtype"]))  # type: ignore[misc]
        for block in state["blocks"]:
            self.append(block)
