"""What a partition of the audit returns, and how two of them merge (no Dask needed here).

A Dask task audits one :class:`~hepaudit.data.reading.Partition` (a file's entry range)
and returns a :class:`PartResult`: each explainer's partial state, the executor's
counters, and where its per-jet part file went. Two results of disjoint partitions merge
with the explainers' own ``merge``, left before right, so lists kept in chunk order (ΔAUC's
scores) stay in entry order and the reduction gives what one process would. Nothing is
accumulated in place: a task retried after a worker died replaces the lost result and
nothing is counted twice.

:func:`merge_stats` folds the first pass's per-chunk :class:`~hepaudit.data.stats.InputStats`
with the same arithmetic as ``InputStats.update``, so x̄ is bit for bit the local one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from hepaudit.data.stats import InputStats

#: Bin edges of the score histograms every executor fills (scores outside [0, 1] are clipped).
SCORE_BINS = np.linspace(0.0, 1.0, 101)
#: Bin edges of the weighted logit histograms behind the performance section (ROC, rejection):
#: width 0.005 in z, an edge at z = 0 (score 0.5); logits beyond ±20 go to the end bins.
LOGIT_BINS = np.linspace(-20.0, 20.0, 8001)
#: Coarser logit bins (width 0.1) for the bootstrap replicates of the same histograms: the
#: spread of the AUC over replicates, carried to the fine histograms' AUC (auc_ci95)
BOOT_LOGIT_BINS = np.linspace(-20.0, 20.0, 401)
#: bins per feature of the input histograms (over the x̄ pass's fixed range of each feature)
INPUT_BINS = 40
#: Partitions merged per node of the tree reduction (local and Dask alike).
SPLIT_EVERY = 4

Node = TypeVar("Node")


@dataclass
class PartResult:
    """The audit of one partition, or the merge of consecutive ones (``first``..``last``)."""

    first: int
    last: int
    states: dict[str, Any] = field(default_factory=dict)  # explainer -> partial state (absent: failed)
    errors: dict[str, str] = field(default_factory=dict)  # explainer -> first error seen
    seconds: dict[str, float] = field(default_factory=dict)
    n_jets: int = 0
    n_dropped: int = 0
    read_s: float = 0.0
    inference_s: float = 0.0
    score_hist: np.ndarray = field(default_factory=lambda: np.zeros((3, len(SCORE_BINS) - 1)))
    logit_hist: np.ndarray = field(default_factory=lambda: np.zeros((2, len(LOGIT_BINS) - 1)))
    input_hist: np.ndarray | None = None  # (3, features, INPUT_BINS), see InputHistograms
    logit_boot: np.ndarray | None = None  # (R, 2, BOOT_LOGIT_BINS - 1): the bootstrap's logit histograms
    per_jet: list[str] = field(default_factory=list)  # part files, in entry order
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason): left out (skip_corrupt)
    results: dict[str, Any] = field(default_factory=dict)  # explainer -> ExplainerResult, once finished

    def summary(self) -> PartSummary:
        return PartSummary(self.first, self.skipped, sorted(self.errors))


@dataclass
class PartSummary:
    """The few bytes the client needs before reducing: which file failed, which explainer."""

    index: int
    skipped: list[tuple[str, str]]
    failed: list[str]


def merge_parts(a: PartResult, b: PartResult, merge: Callable[[str, Any, Any], Any]) -> PartResult:
    """``a`` then ``b`` (``a`` covers earlier entries); ``merge(name, x, y)`` merges one explainer's states.

    An explainer that failed in either keeps the first error and loses its state: like the
    local executor, one exception fails that explainer for the whole audit.
    """
    errors = dict(a.errors)
    for name, message in b.errors.items():
        errors.setdefault(name, message)
    states: dict[str, Any] = {}
    for name in dict.fromkeys([*a.states, *b.states]):
        if name in errors:
            continue
        if name in a.states and name in b.states:
            try:
                states[name] = merge(name, a.states[name], b.states[name])
            except Exception as exc:  # an explainer's bug in merge fails that explainer only
                errors[name] = f"{type(exc).__name__}: {exc}"
        else:  # a partition with no state for it (skipped file): the other side stands
            states[name] = a.states[name] if name in a.states else b.states[name]
    seconds = dict(a.seconds)
    for name, s in b.seconds.items():
        seconds[name] = seconds.get(name, 0.0) + s
    return PartResult(first=min(a.first, b.first), last=max(a.last, b.last), states=states, errors=errors,
                      seconds=seconds, n_jets=a.n_jets + b.n_jets, n_dropped=a.n_dropped + b.n_dropped,
                      read_s=a.read_s + b.read_s, inference_s=a.inference_s + b.inference_s,
                      score_hist=a.score_hist + b.score_hist, logit_hist=a.logit_hist + b.logit_hist,
                      input_hist=b.input_hist if a.input_hist is None else
                      (a.input_hist if b.input_hist is None else a.input_hist + b.input_hist),
                      logit_boot=_add(a.logit_boot, b.logit_boot),
                      per_jet=a.per_jet + b.per_jet,
                      skipped=a.skipped + b.skipped)


def merge_many(parts: Sequence[PartResult], merge: Callable[[str, Any, Any], Any]) -> PartResult:
    """Left fold of consecutive results (one node of the tree reduction)."""
    out = parts[0]
    for part in parts[1:]:
        out = merge_parts(out, part, merge)
    return out


def _add(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    return a if b is None else a + b


def merge_stats(a: InputStats, b: InputStats) -> InputStats:
    """``a`` then ``b``: sums add, maxima take the max (``a`` empty gives ``b``'s arrays unchanged)."""
    sums = dict(a.sums)
    for name, value in b.sums.items():
        sums[name] = value if name not in sums else sums[name] + value
    abs_max = b.abs_max if a.abs_max is None else (a.abs_max if b.abs_max is None
                                                    else np.maximum(a.abs_max, b.abs_max))
    return InputStats(count=a.count + b.count, sums=sums, feature_sum=_add(a.feature_sum, b.feature_sum),
                      feature_sumsq=_add(a.feature_sumsq, b.feature_sumsq), cross=_add(a.cross, b.cross),
                      abs_max=abs_max)


def tree_levels(n: int, split_every: int) -> list[list[tuple[int, int]]]:
    """The reduction plan: per level, ``(start, stop)`` slices of the previous level to merge.

    Consecutive groups only, so the order of entries is kept at every level.
    """
    if split_every < 2:
        raise ValueError("split_every must be at least 2")
    levels = []
    while n > 1:
        groups = [(i, min(i + split_every, n)) for i in range(0, n, split_every)]
        levels.append(groups)
        n = len(groups)
    return levels


class MergeTree(Generic[Node]):
    """The tree reduction of :func:`tree_levels`, fed one node at a time.

    Consecutive nodes are merged in groups of ``split_every`` as soon as a group is full, level
    by level, and :meth:`result` merges what is left bottom up: the same groups as the Dask
    executor's reduction over the same partitions (so the same sums in the same order), while
    holding at most ``split_every`` nodes per level.
    """

    def __init__(self, merge: Callable[[Sequence[Node]], Node], split_every: int = SPLIT_EVERY) -> None:
        if split_every < 2:
            raise ValueError("split_every must be at least 2")
        self.merge = merge
        self.split_every = split_every
        self.levels: list[list[Node]] = []

    def push(self, node: Node, level: int = 0) -> None:
        while len(self.levels) <= level:
            self.levels.append([])
        self.levels[level].append(node)
        if len(self.levels[level]) == self.split_every:
            group, self.levels[level] = self.levels[level], []
            self.push(self.merge(group), level + 1)

    def result(self) -> Node | None:
        """The root (None when nothing was pushed)."""
        level = 0
        while level < len(self.levels):
            nodes = self.levels[level]
            higher = any(self.levels[k] for k in range(level + 1, len(self.levels)))
            if nodes and not higher and len(nodes) == 1:
                return nodes[0]
            if nodes:
                self.levels[level] = []
                self.push(self.merge(nodes) if len(nodes) > 1 else nodes[0], level + 1)
            level += 1
        return None


def fill_input_histograms(hist: np.ndarray | None, values: np.ndarray, labels: np.ndarray | None,
                          weights: np.ndarray | None, feature_range: np.ndarray) -> np.ndarray:
    """Add one chunk's (n, features) input values to the per-class histograms (3, F, INPUT_BINS)
    over each feature's fixed range (values outside go to the end bins)."""
    n, f = values.shape
    if hist is None:
        hist = np.zeros((3, f, INPUT_BINS))
    lo, width = feature_range[:, 0], feature_range[:, 1] - feature_range[:, 0]
    width = np.where(width > 0, width, 1.0)
    cls = np.full(n, 2, np.int64) if labels is None else np.asarray(labels).astype(np.int64)
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    base = (np.arange(f, dtype=np.int64) * INPUT_BINS)[None, :]
    size = 3 * f * INPUT_BINS
    rows = max(1, (1 << 20) // max(f, 1))  # about a million values at a time
    for start in range(0, n, rows):
        x = values[start:start + rows].astype(np.float64)
        b = np.clip(np.floor((x - lo) / width * INPUT_BINS), 0, INPUT_BINS - 1).astype(np.int64)
        flat = (cls[start:start + rows, None] * (f * INPUT_BINS) + base + b).ravel()
        hist += np.bincount(flat, weights=np.repeat(w[start:start + rows], f), minlength=size).reshape(hist.shape)
    return hist
