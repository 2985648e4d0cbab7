"""One container for per-jet attributions, as shap's ``Explanation``: every attribution
explainer that has per-jet values fills it, and per_jet.root, the shared plots and the
report all read it, so none of them special-cases an explainer.

:class:`Explanation` holds, for a set of jets, the attribution of every feature (or player:
a group of features) and what is known beside it: the base value the attributions add up
from, the input values, the per-jet standard error, the labels, the scores. Its branches in
per_jet.root follow one naming rule (:meth:`Explanation.branches`):

* ``{prefix}_{feature}``: the attribution (``shap_eta_3``, ``grad_f2``), or, for the features of
  a per-particle input in the main tree, one array branch ``{prefix}_{input}`` of shape
  (particles, features) (``lrp_x[30][3]``);
* ``{prefix}_std_{feature}``: its standard error, where the method estimates one;
* ``{prefix}_input_{feature}``: the feature's input value (in a tree of its own);
* ``base_value`` in a tree of its own, ``{prefix}_base_value`` in the main tree.

:class:`ExplanationSample` keeps a bottom-k sample of rows keyed by a hash of the entry
number, so explainers that see every jet (LRP, gradients) carry a sample for the plots
that merges exactly, whatever the partitions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hepaudit.sampling import salted_uniform

_ROWS = ("values", "entries", "base_values", "data", "std", "labels", "scores")


@dataclass
class Explanation:
    """Per-jet attributions: ``values[j, k]`` is feature (player) k's attribution in jet j."""

    values: np.ndarray  # (jets, features)
    feature_names: list[str]
    entries: np.ndarray  # (jets,) entry numbers in the input chain
    base_values: np.ndarray | None = None  # (jets,) what the attributions add up from
    data: np.ndarray | None = None  # (jets, features) the input values
    std: np.ndarray | None = None  # (jets, features) standard error of each attribution
    labels: np.ndarray | None = None  # (jets,) 1 signal, 0 background, 2 unlabelled
    scores: np.ndarray | None = None  # (jets,) the tagger's score
    output: str = "logit"  # what the attributions explain: "logit", "probability", ...

    def __post_init__(self) -> None:
        n, k = np.shape(self.values)[0], len(self.feature_names)
        if np.ndim(self.values) != 2 or np.shape(self.values)[1] != k:
            raise ValueError(f"values: expected shape (jets, {k}), found {np.shape(self.values)}")
        for name in _ROWS[1:]:
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{name}: expected {n} rows, found {len(value)}")
        for name in ("data", "std"):
            value = getattr(self, name)
            if value is not None and np.shape(value) != np.shape(self.values):
                raise ValueError(f"{name}: expected shape {np.shape(self.values)}, found {np.shape(value)}")

    def __len__(self) -> int:
        return len(self.values)

    def take(self, rows: np.ndarray | slice) -> Explanation:
        """The explanation of some of the jets."""
        columns: dict[str, Any] = {name: None if getattr(self, name) is None else getattr(self, name)[rows]
                                   for name in _ROWS}
        return replace(self, **columns)

    @staticmethod
    def concat(parts: Sequence[Explanation]) -> Explanation:
        """The jets of ``parts`` one after the other (same features; optional parts present in all or none)."""
        first = parts[0]
        columns: dict[str, Any] = {}
        for name in _ROWS:
            present = [getattr(p, name) for p in parts]
            columns[name] = None if any(v is None for v in present) else np.concatenate(present)
        return replace(first, **columns)

    def waterfall(self, jet: int | None = None, *, entry: int | None = None, top: int = 10) -> Any:
        """One jet's attributions as a waterfall (a matplotlib Figure, for a notebook): from the
        base value, the ``top`` largest contributions one after the other, the rest as one bar,
        up to what the attributions add up to, each labelled with the feature's value. Give the
        jet by its row here or by its ``entry`` number in the input chain."""
        from hepaudit.report.explanation_figures import waterfall_figure

        if (jet is None) == (entry is None):
            raise ValueError("give either jet (a row of this explanation) or entry (an entry number)")
        if entry is not None:
            rows = np.flatnonzero(np.asarray(self.entries) == entry)
            if not len(rows):
                raise ValueError(f"entry {entry} is not among the {len(self)} jets explained")
            jet = int(rows[0])
        assert jet is not None
        if not -len(self) <= jet < len(self):
            raise IndexError(f"jet {jet} of {len(self)}")
        return waterfall_figure(self, jet % len(self), top)

    def mean_abs(self) -> np.ndarray:
        """Mean |attribution| per feature: the usual ranking."""
        return np.abs(self.values).mean(axis=0) if len(self) else np.zeros(len(self.feature_names))

    def branches(self, prefix: str, own_tree: bool = False, grids: Mapping[str, Any] | None = None
                 ) -> dict[str, np.ndarray]:
        """per_jet.root columns by the naming rule of this module; with ``own_tree`` also the
        jets' ``entry``, ``label``, ``score`` and inputs (a subsample's tree of its own).

        ``grids`` (``InputBuilder.particle_grids()``): the features of each per-particle input
        go to one array branch ``{prefix}_{input}`` of shape (particles, features) per jet
        (``lrp_x[30][3]``), not to a branch per feature."""
        out: dict[str, np.ndarray] = {}
        gridded: set[int] = set()
        for name, grid in (grids or {}).items():
            if grid.index.max() < len(self.feature_names):
                out[f"{prefix}_{name}"] = self.values[:, grid.index]
                if self.std is not None:
                    out[f"{prefix}_std_{name}"] = self.std[:, grid.index]
                gridded.update(int(k) for k in grid.index.ravel())
        if own_tree:
            out["entry"] = np.asarray(self.entries, np.int64)
            if self.labels is not None:
                out["label"] = np.asarray(self.labels, np.int32)
            if self.scores is not None:
                out["score"] = np.asarray(self.scores)
        if self.base_values is not None:
            out["base_value" if own_tree else f"{prefix}_base_value"] = np.asarray(self.base_values)
        for k, name in enumerate(self.feature_names):
            if k not in gridded:
                out[f"{prefix}_{name}"] = self.values[:, k]
        if self.std is not None:
            for k, name in enumerate(self.feature_names):
                if k not in gridded:
                    out[f"{prefix}_std_{name}"] = self.std[:, k]
        if own_tree and self.data is not None:
            for k, name in enumerate(self.feature_names):
                out[f"{prefix}_input_{name}"] = self.data[:, k]
        return out

    @staticmethod
    def input_branches(prefix: str, tensors: dict[str, np.ndarray], inputs: Sequence[str]) -> dict[str, np.ndarray]:
        """``{prefix}_{input}``: one array branch per model input with features, each jet's
        values in the input's own shape (float32), for models whose thousands of features would
        make thousands of branches."""
        return {f"{prefix}_{name}": np.asarray(tensors[name], np.float32) for name in inputs if name in tensors}

    @classmethod
    def from_branches(cls, columns: dict[str, np.ndarray], prefix: str, feature_names: Sequence[str],
                      output: str = "logit") -> Explanation:
        """The explanation a tree of its own holds (the inverse of ``branches(prefix, own_tree=True)``)."""
        names = list(feature_names)

        def matrix(kind: str) -> np.ndarray | None:
            keys = [f"{prefix}_{kind}{n}" for n in names]
            return np.stack([columns[k] for k in keys], axis=1) if keys and all(k in columns for k in keys) else None

        values = matrix("")
        if values is None:
            raise KeyError(f"no {prefix}_{{feature}} columns for the features {names[:3]}...")
        return cls(values, names, np.asarray(columns["entry"]), columns.get("base_value"), matrix("input_"),
                   matrix("std_"), columns.get("label"), columns.get("score"), output)


@dataclass
class ExplanationSample:
    """At most ``size`` rows of an explanation: the jets with the smallest keys (a hash of
    the entry number and ``salt``), so two samples merge into the sample of the union."""

    size: int
    salt: int
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0))
    rows: Explanation | None = None

    def wanted(self, entries: np.ndarray) -> np.ndarray:
        """Which of these jets the sample will hold once they are added (so a caller builds rows
        for those only): those whose key is among the ``size`` smallest of the sample's and theirs."""
        if self.size <= 0:
            return np.zeros(len(entries), bool)
        if len(self.keys) + len(entries) <= self.size:
            return np.ones(len(entries), bool)
        keys = salted_uniform(entries, self.salt)
        cut = np.partition(np.concatenate([self.keys, keys]), self.size - 1)[self.size - 1]
        return keys <= cut

    def add(self, explanation: Explanation) -> None:
        if self.size <= 0 or not len(explanation):
            return
        keys = salted_uniform(explanation.entries, self.salt)
        if len(self.keys) >= self.size:  # only jets that can still enter
            keep = keys < self.keys.max()
            keys, explanation = keys[keep], explanation.take(keep)
        if self.rows is not None:
            keys = np.concatenate([self.keys, keys])
            explanation = Explanation.concat([self.rows, explanation])
        self._cut(keys, explanation)

    def _cut(self, keys: np.ndarray, rows: Explanation) -> None:
        if len(keys) > self.size:
            chosen = np.argpartition(keys, self.size - 1)[:self.size]
            keys, rows = keys[chosen], rows.take(chosen)
        order = np.argsort(rows.entries, kind="stable")  # entry order: independent of the merge order
        self.keys, self.rows = keys[order], rows.take(order)

    def merged(self, other: ExplanationSample) -> ExplanationSample:
        out = ExplanationSample(self.size, self.salt, self.keys, self.rows)
        if other.rows is not None:
            out.add(other.rows)
        return out


