"""Jets already in memory as the audited sample: ``hepaudit.audit(config, arrays=...)``.

A coffea processor or a notebook holds the jets as an awkward Array (one record per jet, a
field per branch) or a dict of numpy/awkward arrays keyed by branch name. :class:`ArraySample`
stands in for the ``[data]`` files: the same checks (every branch there, flat or jagged as
the config needs), the same selection (``cut``, ``max_jets`` per class) and the same chunks,
with entry numbers 0..n-1 in the order given, so per-jet results line up with the arrays.
It runs on the local executor (a Dask cluster would need the arrays shipped to its workers).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hepaudit.config import SampleConfig
from hepaudit.data.reading import FileInfo, Partition, RawChunk, Sample
from hepaudit.errors import ConfigError, DataError, close_matches
from hepaudit.lazy import lazy_module

ak = lazy_module("awkward")

#: The name the in-memory sample goes by where a file's path would be shown.
NAME = "<arrays>"


def as_jet_array(arrays: Any) -> Any:
    """An awkward record array, one record per jet, from an awkward Array or a dict of arrays."""
    if isinstance(arrays, Mapping):
        if not arrays:
            raise ConfigError("arrays: no branches given")
        lengths = {k: len(v) for k, v in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise ConfigError(f"arrays: every branch needs one entry per jet, found lengths {lengths}")
        return ak.zip({k: ak.Array(v) if not isinstance(v, ak.Array) else v for k, v in arrays.items()},
                      depth_limit=1)
    if isinstance(arrays, ak.Array) and arrays.fields:
        return arrays
    raise ConfigError("arrays: expected an awkward Array of records or a dict of arrays, "
                      f"found {type(arrays).__name__}")


def _jagged(array: Any) -> bool:
    """A variable-length list per jet (not one value, nor a fixed-size array)."""
    return isinstance(ak.type(array).content, ak.types.ListType)


class ArraySample(Sample):
    """The audited jets from memory, read like ``[data]``'s files."""

    def __init__(self, config: SampleConfig, arrays: Any, where: str = "data") -> None:
        super().__init__(config, where)
        self.arrays = as_jet_array(arrays)
        self.files = [FileInfo(NAME, len(self.arrays))]

    def _resolve_paths(self) -> list[Path]:
        return []  # no files: the arrays are the sample

    def check(self, flat: Sequence[str], jagged: Sequence[str], skip_corrupt: bool = False) -> None:
        fields = list(self.arrays.fields)
        for name in [*flat, *jagged]:
            if name not in fields:
                raise DataError(f"arrays: no branch {name!r}{close_matches(name, fields)} "
                                f"(given: {', '.join(fields[:12])}{', ...' if len(fields) > 12 else ''})")
        for name in flat:
            if _jagged(self.arrays[name]):
                raise DataError(f"arrays: {name!r} is jagged ({ak.type(self.arrays[name])}); one value per jet "
                                "was expected here")
        for name in jagged:
            if not _jagged(self.arrays[name]):
                raise DataError(f"arrays: {name!r} has one value per jet ({ak.type(self.arrays[name])}); a "
                                "jagged per-constituent array was expected here")

    def _selection_columns(self, names: Sequence[str]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        yield len(self.arrays), {n: np.asarray(ak.to_numpy(self.arrays[n])) for n in names}

    def chunks(self, branches: Sequence[str], step_size: int | None = None,
               partition: Partition | None = None) -> Iterator[RawChunk]:
        step = step_size or self.config.step_size
        columns = self.arrays[list(branches)] if branches else self.arrays[[]]
        for part in ([partition] if partition is not None else self.partitions()):
            for start in range(part.start, part.stop, step):
                end = min(start + step, part.stop)
                entries = np.arange(start, end, dtype=np.int64)
                arrays = columns[start:end]
                if part.mask is not None:
                    keep = part.mask[start - part.start:end - part.start]
                    if not keep.any():
                        continue
                    arrays, entries = arrays[keep], entries[keep]
                yield RawChunk(arrays, entries, NAME)

    def __getstate__(self) -> dict[str, object]:
        raise ConfigError("arrays= runs on the local executor: a Dask cluster would need the arrays on its workers "
                          "(write them to a ROOT file and list it in data.files)")
