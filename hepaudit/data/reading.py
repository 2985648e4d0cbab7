"""Reading jets from ROOT: files and globs, checked up front, then chunk by chunk.

:class:`Sample` opens every file once to check the tree and branches (so a typo fails
in a second with the close matches named, not after an hour), then :meth:`Sample.chunks`
streams ``step_size`` jets at a time with uproot. Entry numbers count along the chain
of files, so per-jet outputs line up with the input as a friend tree.

A selection (``cut``, and ``max_jets`` when the sample has labels) is decided up front by
:meth:`Sample.select`, which reads only the branches it needs: each partition then carries
the mask of its entries, and chunks hold the selected jets only, with their chain entry
numbers. ``max_jets`` takes jets in entry order per class, each class in proportion to its
share of the selection (at least one jet of each class present), so a capped sample of a
file sorted by class still holds both classes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from hepaudit.config import SampleConfig, resolve_files
from hepaudit.errors import DataError, HepauditError, close_matches


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
    mask: np.ndarray | None = None  # the selected entries of [start, stop) (None: all)

    @property
    def n_entries(self) -> int:
        return self.stop - self.start if self.mask is None else int(self.mask.sum())


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
        self.paths = self._resolve_paths()
        self.files: list[FileInfo] = []
        self.skipped: list[tuple[str, str]] = []  # (path, reason): unreadable files left out (skip_corrupt)
        self.masks: list[np.ndarray] | None = None  # per file, the selected entries (select())
        self._selected = 0

    def _resolve_paths(self) -> list[Path]:
        return resolve_files(self.config.files, f"{self.where}.files")

    def __getstate__(self) -> dict[str, object]:
        # a Dask task needs its partition's mask only (the partition carries it), not every file's
        state = dict(self.__dict__)
        state["masks"] = None
        return state

    def check(self, flat: Sequence[str], jagged: Sequence[str], skip_corrupt: bool = False) -> None:
        """Open each file: the tree exists, every branch exists with the expected shape.

        With ``skip_corrupt``, a file that is not a readable ROOT file is left out and listed
        in :attr:`skipped` (entry numbers then count along the readable files); a missing
        file, tree or branch is still an error: that is a config mistake, not damage.
        """
        self.files = []
        self.skipped = []
        uuids: dict[str, Path] = {}
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
                uuid = str(getattr(handle.file, "uuid", "") or "")
                if uuid and uuid in uuids:  # a copy keeps the UUID ROOT gave the file when it was made
                    raise DataError(f"{path}: the same ROOT file as {uuids[uuid]} (a copy: same UUID {uuid}); "
                                    f"its jets would be audited twice: list it once in {self.where}.files")
                if uuid:
                    uuids[uuid] = path
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
        if self.masks is not None:
            self.masks = [m for f, m in zip(self.files, self.masks) if f.path != path]
            self._selected = int(sum(int(m.sum()) for m in self.masks))
        self.files = [f for f in self.files if f.path != path]
        self.skipped.append((path, reason))

    def prepare(self, flat: Sequence[str], jagged: Sequence[str], skip_corrupt: bool = False) -> None:
        """:meth:`check` (with the branches the selection reads) then :meth:`select`."""
        from hepaudit.data.selection import Cut

        extra = Cut(self.config.cut, f"{self.where}.cut").branches if self.config.cut else []
        if self.config.max_jets is not None and self.config.label:
            extra.append(self.config.label)
        self.check(list(dict.fromkeys([*flat, *extra])), jagged, skip_corrupt)
        try:
            self.select()
        except (DataError, KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:
            if isinstance(exc, HepauditError):
                raise
            raise DataError(f"{self.where}: the selection could not be read ({type(exc).__name__}: "
                            f"{(str(exc).splitlines() or [''])[0][:150]})") from None

    @property
    def n_entries(self) -> int:
        """Jets that will be read: all entries, or the selection, capped by ``max_jets``."""
        if self.masks is not None or self._selected:
            return self._selected
        total = sum(f.entries for f in self.files)
        cap = self.config.max_jets
        return total if cap is None else min(total, cap)

    def select(self) -> None:
        """Apply ``cut`` and (with labels) ``max_jets``: per file, the entries the audit reads."""
        from hepaudit.data.selection import Cut

        config = self.config
        cut = Cut(config.cut, f"{self.where}.cut") if config.cut else None
        balance = config.max_jets is not None and config.label is not None
        if cut is None and not balance:
            return
        masks: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        names = sorted(set(cut.branches if cut else []) | ({config.label} if balance and config.label else set()))
        for entries, arrays in self._selection_columns(names):
            masks.append(cut.mask(arrays) if cut else np.ones(entries, bool))
            if balance and config.label:
                labels.append(np.asarray(arrays[config.label]))
        if balance and config.max_jets is not None:
            masks = _capped(masks, labels, config.max_jets)
        self.masks = masks
        self._selected = int(sum(int(m.sum()) for m in masks))

    def _selection_columns(self, names: Sequence[str]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Per file, its entries and the branches the selection reads (numpy)."""
        for info in self.files:
            with open_root(info.path) as handle:
                yield info.entries, handle[self.config.tree].arrays(list(names), library="np")

    def partitions(self, entries_per_partition: int | None = None) -> list[Partition]:
        """Entry ranges covering the jets :meth:`chunks` would read, in chain order.

        Each file is cut into ranges of ``entries_per_partition`` jets (rounded up to a
        multiple of ``step_size``, so chunk boundaries are those of a single pass); None
        gives one range per file. ``max_jets`` is honoured across the chain.
        """
        step = self.config.step_size
        size = None if entries_per_partition is None else max(1, -(-entries_per_partition // step)) * step
        if self.masks is not None:
            return self._selected_partitions(size)
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

    def _selected_partitions(self, size: int | None) -> list[Partition]:
        """Partitions over each file's entries up to its last selected one, with their masks."""
        assert self.masks is not None
        parts: list[Partition] = []
        offset = 0
        for index, (info, mask) in enumerate(zip(self.files, self.masks)):
            chosen = np.flatnonzero(mask)
            if len(chosen):
                stop = int(chosen[-1]) + 1
                width = stop if size is None else size
                for start in range(0, stop, max(width, 1)):
                    end = min(start + width, stop)
                    if mask[start:end].any():
                        parts.append(Partition(index, info.path, start, end, offset, mask[start:end].copy()))
            offset += info.entries
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
                        entries = np.arange(part.offset + start, part.offset + end, dtype=np.int64)
                        if part.mask is not None:
                            keep = part.mask[start - part.start:end - part.start]
                            if not keep.any():
                                continue
                            arrays = tree.arrays(list(branches), entry_start=start, entry_stop=end, library="ak")
                            yield RawChunk(arrays[keep], entries[keep], part.path)
                            continue
                        arrays = tree.arrays(list(branches), entry_start=start, entry_stop=end, library="ak")
                        yield RawChunk(arrays, entries, part.path)
            except DataError:
                raise
            except Exception as exc:  # uproot/awkward/zlib raise many types on a damaged basket
                if isinstance(exc, (KeyboardInterrupt, MemoryError)):
                    raise
                raise CorruptFileError(part.path, f"{part.path}: reading failed ({type(exc).__name__}: "
                                       f"{(str(exc).splitlines() or [''])[0][:150]})") from None

    def summary(self) -> list[dict[str, object]]:
        return [{"path": f.path, "entries": f.entries} for f in self.files]


def _capped(masks: list[np.ndarray], labels: list[np.ndarray], cap: int) -> list[np.ndarray]:
    """At most ``cap`` selected jets, in entry order per class: each label value present in the
    selection gets its share of ``cap`` (at least one jet), the rest of its jets are dropped."""
    label = np.concatenate(labels) if labels else np.zeros(0)
    chosen = np.concatenate(masks) if masks else np.zeros(0, bool)
    selected = np.flatnonzero(chosen)
    if len(selected) <= cap:
        return masks
    classes, counts = np.unique(label[selected], return_counts=True)
    quota = np.maximum(1, np.floor(cap * counts / counts.sum()).astype(np.int64))
    while quota.sum() > cap:  # more classes than jets allowed: the largest shares give way
        quota[np.argmax(quota)] -= 1
    for i in np.argsort(-(cap * counts / counts.sum() - quota)):  # largest remainders first
        if quota.sum() >= cap:
            break
        quota[i] += 1
    keep = np.zeros_like(chosen)
    for c, q in zip(classes, quota):
        keep[selected[label[selected] == c][:q]] = True
    bounds = np.cumsum([0] + [len(m) for m in masks])
    return [keep[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def as_path_list(paths: Sequence[Path]) -> list[str]:
    return [str(p) for p in paths]
