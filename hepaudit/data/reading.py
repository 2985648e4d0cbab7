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


@dataclass
class RawChunk:
    """Branches of consecutive jets from one file; ``entries`` are chain entry numbers."""

    arrays: ak.Array
    entries: np.ndarray  # int64
    file: str


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

    def check(self, flat: Sequence[str], jagged: Sequence[str]) -> None:
        """Open each file: the tree exists, every branch exists with the expected shape."""
        self.files = []
        for path in self.paths:
            if not path.is_file():
                raise DataError(f"{path}: file not found (from {self.where}.files)")
            try:
                handle = uproot.open(path)
            except Exception as exc:
                raise DataError(f"{path}: not a readable ROOT file ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:150] if str(exc) else 'truncated or corrupt'})") from None
            with handle:
                tree_name = self.config.tree
                try:
                    tree = handle[tree_name]
                except Exception:
                    names = [k.split(";")[0] for k in handle.keys(recursive=True)]
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

    @property
    def n_entries(self) -> int:
        """Jets that will be read: all entries, capped by ``max_jets``."""
        total = sum(f.entries for f in self.files)
        cap = self.config.max_jets
        return total if cap is None else min(total, cap)

    def chunks(self, branches: Sequence[str], step_size: int | None = None) -> Iterator[RawChunk]:
        """Stream the branches in chunks of at most ``step_size`` jets, in chain order."""
        step = step_size or self.config.step_size
        remaining = self.n_entries
        offset = 0
        for info in self.files:
            if remaining <= 0:
                break
            stop = min(info.entries, remaining)
            try:
                with uproot.open(info.path) as handle:
                    tree = handle[self.config.tree]
                    for start in range(0, stop, step):
                        end = min(start + step, stop)
                        arrays = tree.arrays(list(branches), entry_start=start, entry_stop=end, library="ak")
                        yield RawChunk(arrays, np.arange(offset + start, offset + end, dtype=np.int64), info.path)
            except DataError:
                raise
            except (OSError, ValueError, uproot.deserialization.DeserializationError) as exc:
                raise DataError(f"{info.path}: reading failed ({type(exc).__name__}: {str(exc).splitlines()[0][:150]})") from None
            offset += info.entries
            remaining -= stop

    def summary(self) -> list[dict[str, object]]:
        return [{"path": f.path, "entries": f.entries} for f in self.files]


def as_path_list(paths: Sequence[Path]) -> list[str]:
    return [str(p) for p in paths]
