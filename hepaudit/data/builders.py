"""The one place that turns tree branches into model input tensors.

:class:`InputBuilder` knows, for every ``[[inputs]]`` table, which branches it needs,
how to build its float32 tensor for a chunk (flat jet branches, constituents through a
recipe or derived features, masks), and the name of every feature in model order.
Explainers address features through :attr:`InputBuilder.slots`: which input tensor and
which flat position within a jet's row hold feature k. Groups ``particle_{i}`` and
``feature_{name}`` are derived from the same names.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hepaudit.config import InputConfig
from hepaudit.data.cms import CmsInput, cms_input
from hepaudit.data.constituents import (
    DERIVED_FEATURES,
    derive_feature,
    jet_axis,
    momenta_from_cartesian,
    momenta_from_ptetaphi,
    pad_jagged,
    padding_mask,
    pt_ordered_momenta,
    reorder,
)
from hepaudit.data.pid import PID_FLAGS, pid_flag
from hepaudit.data.recipes import Recipe
from hepaudit.errors import ConfigError, DataError, close_matches
from hepaudit.lazy import lazy_module
from hepaudit.model.graph import TensorInfo

if TYPE_CHECKING:
    import awkward as ak
else:  # loaded on first use (hepaudit.lazy): registering plugins imports none of them
    ak = lazy_module("awkward")


@dataclass(frozen=True)
class FeatureSlot:
    """Feature ``name`` lives in input ``input`` at flat position ``index`` of a jet's row."""

    name: str
    input: str
    index: int
    particle: int | None = None  # constituent rank, for constituent features
    base: str | None = None  # the per-particle feature name, e.g. "pt"


def _feature_order(names: tuple[str, ...], particles: int, layout: str) -> list[tuple[str, int, int]]:
    """(feature, particle, flat index) in the model's own memory order for the layout."""
    n_feat = len(names)
    if layout == "channels":
        return [(names[f], p, f * particles + p) for f in range(n_feat) for p in range(particles)]
    return [(names[f], p, p * n_feat + f) for p in range(particles) for f in range(n_feat)]


@dataclass(frozen=True)
class JetMomentum:
    """A jet four-momentum per jet, float64 numpy arrays."""

    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    energy: np.ndarray

    def pt_and_mass(self) -> tuple[np.ndarray, np.ndarray]:
        mass2 = self.energy**2 - self.px**2 - self.py**2 - self.pz**2
        return np.hypot(self.px, self.py), np.sqrt(np.maximum(mass2, 0.0))


@dataclass(frozen=True)
class ParticleGrid:
    """The features of one per-particle model input as a (particles, features) grid of indices
    into the feature list (``InputBuilder.features``)."""

    features: list[str]  # per-particle feature names (pt, eta, phi), the grid's columns
    index: np.ndarray  # (particles, features) int64

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.index.shape[0]), int(self.index.shape[1])


#: jets built at once within a chunk (the CPU cache, not memory, sets it)
BUILD_ROWS = 16_384


class InputBuilder:
    """Builds every configured model input for a chunk of jets."""

    def __init__(self, inputs: tuple[InputConfig, ...], recipes: Mapping[str, Recipe],
                 model_inputs: tuple[TensorInfo, ...]) -> None:
        self.inputs = inputs
        self.recipes = dict(recipes)
        self.model_inputs = {t.name: t for t in model_inputs}
        for cfg in inputs:
            if cfg.name not in self.model_inputs:
                hint = close_matches(cfg.name, self.model_inputs)
                raise ConfigError(f"inputs: the model has no input {cfg.name!r}{hint}"
                                  f" (model inputs: {', '.join(self.model_inputs)})")
            if cfg.preprocess and cfg.preprocess not in self.recipes:
                hint = close_matches(cfg.preprocess, self.recipes)
                raise ConfigError(f"inputs.{cfg.name}.preprocess: unknown recipe {cfg.preprocess!r}"
                                  f"{hint} (known: {', '.join(sorted(self.recipes))})")
        missing = [n for n in self.model_inputs if n not in {c.name for c in inputs}]
        if missing:
            raise ConfigError(f"inputs: the model input {missing[0]!r} has no [[inputs]] table "
                              f"(model inputs: {', '.join(self.model_inputs)})")
        constituents = [c for c in inputs if c.kind == "constituents"]
        for cfg in inputs:
            if cfg.kind == "mask":
                target = cfg.of or (constituents[0].name if len(constituents) == 1 else None)
                if target is None or target not in {c.name for c in constituents}:
                    raise ConfigError(f"inputs.{cfg.name}.of: name the constituents input this mask belongs to")
        self._mask_of = {c.name: (c.of or constituents[0].name) for c in inputs if c.kind == "mask"}
        # kind = "cms": CMSSW-style inputs from preprocess.json and a variable table (data/cms.py)
        self.cms: dict[str, CmsInput] = {c.name: cms_input(c, self.model_inputs[c.name])
                                         for c in inputs if c.kind == "cms"}
        #: what the report should say about how the inputs were built (e.g. variables set to pad)
        self.warnings: list[str] = [w for c in self.cms.values() for w in c.warnings]
        self.flat_branches: list[str] = []
        self.jagged_branches: list[str] = []
        for cfg in inputs:
            if cfg.kind == "cms":
                self.jagged_branches += [b for b in self.cms[cfg.name].branches if b not in self.jagged_branches]
                continue
            if cfg.kind == "jet":
                self.flat_branches += [b for b in cfg.branches or () if b not in self.flat_branches]
            elif cfg.kind == "constituents":
                assert cfg.momentum is not None
                extra = [f for f in cfg.features or () if f not in DERIVED_FEATURES and f not in PID_FLAGS
                         ] if not cfg.preprocess else []
                if cfg.pid and any(f in PID_FLAGS for f in cfg.features or ()):
                    extra.append(cfg.pid)
                self.jagged_branches += [b for b in (*cfg.momentum.branches, *extra) if b not in self.jagged_branches]
        self.slots = self._make_slots()
        self.features = [s.name for s in self.slots]
        seen: dict[str, str] = {}
        for slot in self.slots:  # a repeated feature would be reported twice under one name
            if slot.name in seen:
                raise ConfigError(f"inputs: feature {slot.name!r} appears twice (input {seen[slot.name]!r} and "
                                  f"{slot.input!r}); list each branch or feature once")
            seen[slot.name] = slot.input
        # per chunk of branches still alive (by id, dropped with it): each constituents input's
        # jet four-momentum, the sum the builder computes anyway (see jet_momentum)
        self._jets: dict[int, dict[str, ak.Array]] = {}

    # -- names -----------------------------------------------------------------------------------
    def _per_particle_names(self, cfg: InputConfig) -> tuple[str, ...]:
        if cfg.preprocess:
            recipe_features = _recipe_feature_names(self.recipes[cfg.preprocess])
            if cfg.features:
                if recipe_features is not None and tuple(cfg.features) != recipe_features:
                    # the names would only relabel the recipe's columns: a reordered or misspelt
                    # list reports one feature's importance under another's name
                    how = ("in another order" if sorted(cfg.features) == sorted(recipe_features)
                           else f"as {', '.join(cfg.features)}")
                    raise ConfigError(f"inputs.{cfg.name}.features: the recipe {cfg.preprocess!r} makes the "
                                      f"features {', '.join(recipe_features)}, in this order; they are named "
                                      f"{how}. Names do not choose columns here: omit features, or list "
                                      "the recipe's own in its order")
                return tuple(cfg.features)
            if recipe_features is None:
                raise ConfigError(f"inputs.{cfg.name}.features: name the features recipe {cfg.preprocess!r} makes")
            return recipe_features
        return tuple(cfg.features or ())

    def _make_slots(self) -> list[FeatureSlot]:
        feature_inputs = [c for c in self.inputs
                          if c.kind != "mask" and not (c.kind == "cms" and self.cms[c.name].is_mask)]
        prefix = len(feature_inputs) > 1
        slots: list[FeatureSlot] = []
        for cfg in feature_inputs:
            pre = f"{cfg.name}." if prefix else ""
            if cfg.kind == "jet":
                slots += [FeatureSlot(pre + b, cfg.name, i) for i, b in enumerate(cfg.branches or ())]
            elif cfg.kind == "cms":  # (N, C, P): variable-major memory order; (N, P, C): object-major
                cms = self.cms[cfg.name]
                order = "particles" if cms.particles_first else "channels"
                for feat, p, index in _feature_order(cms.var_names, cms.length, order):
                    slots.append(FeatureSlot(f"{pre}{feat}_{p}", cfg.name, index, p, pre + feat))
            else:
                names = self._per_particle_names(cfg)
                assert cfg.max_particles is not None
                for feat, p, index in _feature_order(names, cfg.max_particles, cfg.layout):
                    slots.append(FeatureSlot(f"{pre}{feat}_{p}", cfg.name, index, p, pre + feat))
        return slots

    def groups(self) -> dict[str, list[int]]:
        """``particle_{i}`` and ``feature_{name}`` groups as lists of feature indices, and, when
        the model has several feature inputs, ``input_{name}`` (every feature of one input)."""
        groups: dict[str, list[int]] = {}
        if len({s.input for s in self.slots}) > 1:
            for k, slot in enumerate(self.slots):
                groups.setdefault(f"input_{slot.input}", []).append(k)
        for k, slot in enumerate(self.slots):
            if slot.particle is None:
                continue
            prefix = slot.name[: slot.name.index(".") + 1] if "." in slot.name else ""
            groups.setdefault(f"{prefix}particle_{slot.particle}", []).append(k)
            groups.setdefault(f"feature_{slot.base}", []).append(k)
        return groups

    def match(self, patterns: list[str]) -> list[int]:
        """Feature indices matching glob patterns like ``pt_*`` (for user-defined groups)."""
        regexes = [re.compile("^" + re.escape(p).replace(r"\*", ".*").replace(r"\?", ".") + "$") for p in patterns]
        return [k for k, name in enumerate(self.features) if any(r.match(name) for r in regexes)]

    @property
    def branches(self) -> list[str]:
        return self.flat_branches + self.jagged_branches

    def particle_grids(self) -> dict[str, ParticleGrid]:
        """Per model input of per-particle features: the (particles, features) grid of feature
        indices, particle-major whatever the input's layout, for per-jet array branches and the
        η–φ image. Worked out once (explainers ask for it every chunk)."""
        grids: dict[str, ParticleGrid] | None = self.__dict__.get("_particle_grids")
        if grids is None:
            grids = self.__dict__["_particle_grids"] = self._find_particle_grids()
        return grids

    def _find_particle_grids(self) -> dict[str, ParticleGrid]:
        out: dict[str, ParticleGrid] = {}
        for name in self.feature_inputs:
            slots = [(k, s) for k, s in enumerate(self.slots) if s.input == name]
            if not slots or any(s.particle is None for _, s in slots):
                continue
            bases = list(dict.fromkeys(str(s.base) for _, s in slots))
            particles = max(s.particle for _, s in slots if s.particle is not None) + 1
            grid = np.full((particles, len(bases)), -1, np.int64)
            for k, s in slots:
                assert s.particle is not None and s.base is not None
                grid[s.particle, bases.index(str(s.base))] = k
            if (grid >= 0).all():
                out[name] = ParticleGrid(bases, grid)
        return out

    @property
    def feature_inputs(self) -> list[str]:
        """The model inputs that hold features (not masks), in model order."""
        return list(dict.fromkeys(slot.input for slot in self.slots))

    # -- building --------------------------------------------------------------------------------
    def build(self, arrays: ak.Array, threads: int = 1, helping: Callable[[], bool] | None = None
              ) -> dict[str, np.ndarray]:
        """Every model input for this chunk, float32 (or the model's dtype), in model shape.

        A large chunk is built ``BUILD_ROWS`` jets at a time: awkward's and numpy's passes over
        a block's constituents stay in the CPU cache (twice as fast as over 100k jets at once).
        ``threads`` > 1 builds up to that many blocks at once (awkward's kernels and numpy
        release the GIL), all the time, or with ``helping`` only while ``helping()`` holds
        (the audit is waiting for this chunk: :func:`hepaudit.model.blocks.for_blocks_helped`).
        Each block is built alone and the blocks are joined in order: the same inputs."""
        n = len(arrays)
        if n <= 2 * BUILD_ROWS:
            built, jets = self._build(arrays)
        else:
            from hepaudit.model.blocks import for_blocks, for_blocks_helped

            blocks: list[tuple[dict[str, np.ndarray], dict[str, ak.Array]]] = [({}, {})] * len(range(0, n, BUILD_ROWS))

            def block(i: int, start: int, stop: int) -> None:
                blocks[i] = self._build(arrays[start:stop])

            if helping is None:
                for_blocks(n, BUILD_ROWS, threads, block)
            else:
                for_blocks_helped(n, BUILD_ROWS, threads, block, helping)
            built = {name: np.concatenate([b[0][name] for b in blocks]) for name in blocks[0][0]}
            jets = {name: ak.concatenate([b[1][name] for b in blocks]) for name in blocks[0][1]}
        for name, jet in jets.items():
            self._remember(arrays, name, jet)
        return built

    def _build(self, arrays: ak.Array) -> tuple[dict[str, np.ndarray], dict[str, ak.Array]]:
        built: dict[str, np.ndarray] = {}
        masks: dict[str, np.ndarray] = {}
        jets: dict[str, ak.Array] = {}
        for cfg in self.inputs:
            if cfg.kind == "jet":
                cols = [ak.to_numpy(arrays[b]).astype(np.float32) for b in cfg.branches or ()]
                built[cfg.name] = np.stack(cols, axis=1) if cols else np.zeros((len(arrays), 0), np.float32)
            elif cfg.kind == "cms":
                built[cfg.name] = self.cms[cfg.name].build(arrays)
            elif cfg.kind == "constituents":
                values, mask, jets[cfg.name] = self._constituents(cfg, arrays)
                masks[cfg.name] = mask
                built[cfg.name] = _layout(values, cfg.layout)
        for cfg in self.inputs:
            if cfg.kind == "mask":
                built[cfg.name] = masks[self._mask_of[cfg.name]]
        return {name: self._fit_rank(name, value) for name, value in built.items()}, jets

    def _constituents(self, cfg: InputConfig, arrays: ak.Array) -> tuple[np.ndarray, np.ndarray, ak.Array]:
        """The input's values and padding mask, and the jet four-momentum (the constituents' sum)."""
        assert cfg.max_particles is not None
        parts, permutation, counts = pt_ordered_momenta(_momentum_branches(cfg, arrays))
        jet = jet_axis(parts)
        if cfg.preprocess:
            out = self.recipes[cfg.preprocess](parts, jet, cfg.max_particles)
            return out.values, out.mask, jet
        columns = []
        for feat in cfg.features or ():
            if feat in DERIVED_FEATURES:
                jagged = derive_feature(feat, parts, jet)
            elif feat in PID_FLAGS and cfg.pid:
                jagged = pid_flag(feat, reorder(arrays[cfg.pid], permutation, counts))
            else:
                jagged = reorder(arrays[feat], permutation, counts)
            columns.append(pad_jagged(jagged, cfg.max_particles))
        return np.stack(columns, axis=-1), padding_mask(parts, cfg.max_particles), jet

    def _remember(self, arrays: ak.Array, name: str, jet: ak.Array) -> None:
        key = id(arrays)
        if key not in self._jets:
            self._jets[key] = {}
            weakref.finalize(arrays, self._jets.pop, key, None)
        self._jets[key][name] = jet

    def jet_momentum(self, arrays: ak.Array, name: str) -> JetMomentum | None:
        """The jet four-momentum (sum of the constituents) of input ``name`` as built from
        ``arrays`` (the very object given to :meth:`build`, while it is alive); None when
        this builder has not built that input from it."""
        jet = self._jets.get(id(arrays), {}).get(name)
        return None if jet is None else _numpy_momentum(jet)

    def summed_jet_momentum(self, arrays: ak.Array, name: str) -> JetMomentum:
        """The jet four-momentum of constituents input ``name``, summed from ``arrays`` now
        (for arrays the builder did not build from, e.g. after jets were dropped)."""
        cfg = next(c for c in self.inputs if c.name == name)
        branches = _momentum_branches(cfg, arrays)
        make = momenta_from_cartesian if "px" in branches else momenta_from_ptetaphi
        return _numpy_momentum(jet_axis(make(*branches.values())))

    def _fit_rank(self, name: str, value: np.ndarray) -> np.ndarray:
        """Add the trailing or channel axes of size one a model's input declares, e.g. (N,C,P,1)."""
        want = self.model_inputs[name].shape
        if len(want) == value.ndim + 1:
            if want[-1] == 1:
                value = value[..., None]
            elif len(want) > 1 and want[1] == 1:
                value = value[:, None]
        dtype = self.model_inputs[name].dtype
        target = np.dtype(dtype) if dtype.startswith(("float", "int")) else np.dtype(np.float32)
        if target.kind in "iu" and np.asarray(value).dtype.kind == "f":
            _check_integral(name, dtype, np.asarray(value))
        return np.ascontiguousarray(value, dtype=target)


def _check_integral(name: str, dtype: str, value: np.ndarray) -> None:
    """An integer model input is fed whole numbers only: a cast would truncate 2.7 to 2 and
    turn NaN into the most negative integer, silently."""
    bad = ~np.isfinite(value) | (value != np.round(value))
    if bad.any():
        example = value[bad].flat[0]
        raise DataError(f"model input {name!r} is {dtype}, but {int(bad.sum())} of its values are not whole "
                        f"numbers (e.g. {example:g}); feed it integer branches or check the input's config")


def _momentum_branches(cfg: InputConfig, arrays: ak.Array) -> dict[str, ak.Array]:
    """A constituents input's four-momentum branches, keyed px/py/pz/energy or pt/eta/phi/mass."""
    mom = cfg.momentum
    assert mom is not None
    keys = ("px", "py", "pz", "energy") if mom.px else ("pt", "eta", "phi", "mass")
    return {k: arrays[getattr(mom, k)] for k in keys}


def _numpy_momentum(jet: ak.Array) -> JetMomentum:
    return JetMomentum(*(ak.to_numpy(jet[c]).astype(np.float64) for c in ("px", "py", "pz", "E")))


def _layout(values: np.ndarray, layout: str) -> np.ndarray:
    if layout == "flat":
        return values.reshape(len(values), -1)
    if layout == "channels":
        return np.ascontiguousarray(values.transpose(0, 2, 1))
    return values


def _recipe_feature_names(recipe: Recipe) -> tuple[str, ...] | None:
    """Ask a recipe its feature names by running it on one empty jet."""
    one = ak.Array([[1.0]])
    empty = momenta_from_cartesian(one, one, one, ak.Array([[2.0]]))
    try:
        return tuple(recipe(empty, jet_axis(empty), 1).features)
    except Exception:
        return None


#: a selection of columns: a slice when they are evenly spaced, else their indices
Columns = slice | np.ndarray


def column_selection(index: np.ndarray) -> Columns:
    """These columns as a slice when they are evenly spaced and ascending (a view of an array,
    no gather), else the index array itself."""
    if len(index) and (len(index) == 1 or index[1] > index[0]):
        step = int(index[1] - index[0]) if len(index) > 1 else 1
        if np.array_equal(index, index[0] + step * np.arange(len(index))):
            return slice(int(index[0]), int(index[-1]) + 1, step)
    return index


def _rows(value: np.ndarray, n: int) -> np.ndarray:
    """(n, values per jet): explicit widths, as ``reshape(n, -1)`` cannot size zero jets."""
    return value.reshape(n, int(np.prod(value.shape[1:], dtype=np.int64)))


def feature_matrix(builder: InputBuilder, inputs: dict[str, np.ndarray], view: bool = False) -> np.ndarray:
    """The (N, K) matrix of every feature in model order, gathered from the input tensors.

    ``view=True``: when the features are one input's columns in order (TopoDNN's (N, 30, 3)
    ``x``), the input itself reshaped, not a copy: for callers that only read it."""
    n = len(next(iter(inputs.values())))
    by_input: list[tuple[str, Columns]] | None = builder.__dict__.get("_feature_columns")
    if by_input is None:  # worked out once per builder: explainers ask for it at every block
        slots: dict[str, list[int]] = {}
        for slot in builder.slots:
            slots.setdefault(slot.input, []).append(slot.index)
        by_input = builder.__dict__["_feature_columns"] = [
            (name, column_selection(np.asarray(idx, np.intp))) for name, idx in slots.items()]
    if view and len(by_input) == 1:
        name, cols = by_input[0]
        flat = _rows(inputs[name], n)
        if isinstance(cols, slice) and cols.step == 1 and cols.start == 0 and cols.stop == flat.shape[1]:
            return flat
    # slots are grouped by input in model order, so concatenating per input keeps the order
    parts = [_rows(inputs[name], n)[:, cols] for name, cols in by_input]
    if len(parts) == 1 and not isinstance(by_input[0][1], slice):
        return parts[0]  # a fancy-index gather is a copy already
    return np.concatenate(parts, axis=1)


def input_branches(builder: InputBuilder, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model inputs as per_jet.root columns (``[per_jet] inputs``), float32, named as the
    attributions are: ``input_{input}`` of shape (particles, features) for a per-particle input,
    ``input_{feature}`` for the others."""
    from hepaudit.explanation import Explanation

    matrix = feature_matrix(builder, inputs).astype(np.float32)
    return Explanation(matrix, builder.features, np.arange(len(matrix))).branches("input",
                                                                                 grids=builder.particle_grids())


def with_features(builder: InputBuilder, inputs: dict[str, np.ndarray], matrix: np.ndarray) -> dict[str, np.ndarray]:
    """New input tensors: ``inputs`` with every feature set from the (N, K) ``matrix`` (the
    inverse of :func:`feature_matrix`; positions that are not features, such as masks, keep
    their values)."""
    n = len(matrix)
    out = {name: np.array(value, copy=True) for name, value in inputs.items()}
    flat = {name: value.reshape(n, -1) for name, value in out.items()}  # views of the copies
    for k, slot in enumerate(builder.slots):
        flat[slot.input][:, slot.index] = matrix[:, k]
    return out
