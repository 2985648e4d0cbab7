"""Reading jets from ROOT: files and globs, checked up front, then chunk by chunk.

:class:`Sample` opens every file once to check the tree and branches (so a typo fails
in a second with the close matches named, not after an hour), then :meth:`Sample.chunks`
streams ``step_size`` jets at a time with uproot. Entry numbers count along the chain
of files, so per-jet outputs line up with the input as a friend tree.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from hepaudit.config import SampleConfig, resolve_files
from hepaudit.errors import DataError, close_matches


@dataclass(frozen=True)
class FileInfo:
    path: str
    entries: int


@dataclass(frozen=True)
class Partition:
    """Entries ``[start, stop)`` of one file; ``offset`` is the file's first chain entry number."""

    file_index: int
    path: str
    start: int
    stop: int
    offset: int

    @property
    def n_entries(self) -> int:
        return self.stop - self.start


class CorruptFileError(DataError):
    """A file that cannot be read (unreadable header or a damaged basket); ``path`` names it."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:  # so it crosses process boundaries (Dask) intact
        return (CorruptFileError, (self.path, str(self)))


@dataclass
class RawChunk:
    """Branches of consecutive jets from one file; ``entries`` are chain entry numbers."""

    arrays: ak.Array
    entries: np.ndarray  # int64
    file: str


def open_root(path: str | Path, **options: object) -> uproot.ReadOnlyDirectory:
    """Open a ROOT file and check it is whole: its directory reads, and the file is at least as
    long as its header says (``fEND``); a truncated file can open and even list its keys while
    the baskets at its end are gone. Raises ``ValueError`` for a truncated file."""
    handle = uproot.open(path, **options)
    try:
        handle.keys()  # a truncated file can open and still fail on its directory
        check_length(handle, path)
    except BaseException:
        handle.close()
        raise
    return handle


def check_length(handle: uproot.ReadOnlyDirectory, path: str | Path) -> None:
    """``ValueError`` when the file is shorter than its header's ``fEND`` (cut off in a copy)."""
    size = Path(path).stat().st_size
    end = int(handle.file.fEND)
    if size < end:
        raise ValueError(f"the file is {size} bytes but its header says {end}: truncated")


def _damaged(handle: uproot.ReadOnlyDirectory, name: str) -> bool:
    """The directory lists ``name`` but it cannot be read: damage, not a typo."""
    return any(k.split(";")[0] == name for k in handle.keys(recursive=False))


def _is_jagged(branch: uproot.behaviors.TBranch.TBranch) -> bool:
    interp = branch.interpretation
    return isinstance(interp, uproot.interpretation.jagged.AsJagged) or (
        hasattr(interp, "content") and not isinstance(interp, uproot.interpretation.numerical.AsDtype)
    ) or "[]" in branch.typename or "vector" in branch.typename


class Sample:
    """The files of ``[data]`` (or ``[reference]``), checked and ready to stream."""

    def __init__(self, config: SampleConfig, where: str = "data") -> None:
        self.config = config
        self.where = where
        self.paths = resolve_files(config.files, f"{where}.files")
        self.files: list[FileInfo] = []
        self.skipped: list[tuple[str, str]] = []  # (path, reason): unreadable files left out (skip_corrupt)

    def check(self, flat: Sequence[str], jagged: Sequence[str], skip_corrupt: bool = False) -> None:
        """Open each file: the tree exists, every branch exists with the expected shape.

        With ``skip_corrupt``, a file that is not a readable ROOT file is left out and listed
        in :attr:`skipped` (entry numbers then count along the readable files); a missing
        file, tree or branch is still an error: that is a config mistake, not damage.
        """
        self.files = []
        self.skipped = []
        for path in self.paths:
            if not path.is_file():
                raise DataError(f"{path}: file not found (from {self.where}.files)")
            try:
                handle = open_root(path)
            except Exception as exc:
                reason = (f"{path}: not a readable ROOT file ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:150] if str(exc) else 'truncated or corrupt'})")
                if skip_corrupt:
                    self.skipped.append((str(path), reason))
                    continue
                raise CorruptFileError(str(path), reason) from None
            with handle:
                tree_name = self.config.tree
                try:
                    tree = handle[tree_name]
                except Exception:
                    names = [k.split(";")[0] for k in handle.keys(recursive=True)]
                    if skip_corrupt and _damaged(handle, tree_name):
                        self.skipped.append((str(path), f"{path}: tree {tree_name!r} cannot be read"))
                        continue
                    raise DataError(f"{path}: no tree {tree_name!r}{close_matches(tree_name, names)}"
                                    f"; the file holds: {', '.join(sorted(set(names))) or 'nothing'}") from None
                if not isinstance(tree, uproot.behaviors.TBranch.HasBranches):
                    raise DataError(f"{path}: {tree_name!r} is a {type(tree).__name__}, not a TTree")
                available = list(tree.keys())
                for name in list(flat) + list(jagged):
                    if name not in available:
                        raise DataError(f"{path}: tree {tree_name!r} has no branch {name!r}"
                                        f"{close_matches(name, available)}")
                for name in flat:
                    if _is_jagged(tree[name]):
                        raise DataError(f"{path}: branch {name!r} is jagged ({tree[name].typename}); "
                                        "one value per jet was expected here")
                for name in jagged:
                    if not _is_jagged(tree[name]):
                        raise DataError(f"{path}: branch {name!r} has one value per jet ({tree[name].typename}); "
                                        "a jagged per-constituent branch was expected here")
                self.files.append(FileInfo(str(path), int(tree.num_entries)))

    def drop(self, path: str, reason: str) -> None:
        """Leave a file found unreadable out of the sample (``skip_corrupt``), noting why."""
        self.files = [f for f in self.files if f.path != path]
        self.skipped.append((path, reason))

    @property
    def n_entries(self) -> int:
        """Jets that will be read: all entries, capped by ``max_jets``."""
        total = sum(f.entries for f in self.files)
        cap = self.config.max_jets
        return total if cap is None else min(total, cap)

    def partitions(self, entries_per_partition: int | None = None) -> list[Partition]:
        """Entry ranges covering the jets :meth:`chunks` would read, in chain order.

        Each file is cut into ranges of ``entries_per_partition`` jets (rounded up to a
        multiple of ``step_size``, so chunk boundaries are those of a single pass); None
        gives one range per file. ``max_jets`` is honoured across the chain.
        """
        step = self.config.step_size
        size = None if entries_per_partition is None else max(1, -(-entries_per_partition // step)) * step
        remaining = self.n_entries
        offset = 0
        parts: list[Partition] = []
        for index, info in enumerate(self.files):
            if remaining <= 0:
                break
            stop = min(info.entries, remaining)
            width = stop if size is None else size
            for start in range(0, stop, max(width, 1)):
                parts.append(Partition(index, info.path, start, min(start + width, stop), offset))
            offset += info.entries
            remaining -= stop
        return parts

    def chunks(self, branches: Sequence[str], step_size: int | None = None,
               partition: Partition | None = None) -> Iterator[RawChunk]:
        """Stream the branches in chunks of at most ``step_size`` jets, in chain order
        (only ``partition``'s entry range when given)."""
        step = step_size or self.config.step_size
        for part in ([partition] if partition is not None else self.partitions()):
            try:
                with uproot.open(part.path, array_cache=None, object_cache=None) as handle:  # stream: cache nothing
                    check_length(handle, part.path)  # cut off since it was checked (or on a worker's disk)
                    tree = handle[self.config.tree]
                    for start in range(part.start, part.stop, step):
                        end = min(start + step, part.stop)
                        arrays = tree.arrays(list(branches), entry_start=start, entry_stop=end, library="ak")
                        yield RawChunk(arrays, np.arange(part.offset + start, part.offset + end, dtype=np.int64),
                                       part.path)
            except DataError:
                raise
            except Exception as exc:  # uproot/awkward/zlib raise many types on a damaged basket
                if isinstance(exc, (KeyboardInterrupt, MemoryError)):
                    raise
                raise CorruptFileError(part.path, f"{part.path}: reading failed ({type(exc).__name__}: "
                                       f"{(str(exc).splitlines() or [''])[0][:150]})") from None

    def summary(self) -> list[dict[str, object]]:
        return [{"path": f.path, "entries": f.entries} for f in self.files]


def as_path_list(paths: Sequence[Path]) -> list[str]:
    return [str(p) for p in paths]
