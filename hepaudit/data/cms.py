"""CMS-style model inputs: ``preprocess.json``, the variable table, and the ``cms`` input kind.

CMSSW feeds its ONNX taggers (ParticleNet, DeepAK8, ...) from a ``preprocess.json`` (or the
same numbers in a ``cfi`` PSet): for each ONNX input, the variable names in order, the padded
length ``var_length``, and per variable ``median``, ``norm_factor``, ``lower_bound``,
``upper_bound``, ``pad`` and ``replace_inf_value``. Each variable of each object (PF
candidate, secondary vertex) becomes

    clip((x − median) · norm_factor, lower_bound, upper_bound)

with x first replaced by ``replace_inf_value`` when it is not finite or beyond ±1e32; objects
beyond the jet's own count, up to ``var_length``, get ``pad`` (already in normalised units,
not normalised again); objects beyond ``var_length`` are dropped (CMSSW's
``center_norm_pad``). Inputs are channels-first, (N, C, P), with a trailing axis of one when
the model declares (N, C, P, 1) (DeepAK8); ``layout = "particles"`` builds (N, P, C) for
channels-last models (DeepJet, DeepDoubleX, the Particle Transformer).

The user maps each variable to what the ROOT file provides (the ``variables`` table of an
``[[inputs]]`` table with ``kind = "cms"``): a derived constituent feature (``log_pt``,
``etarel``, ...), a particle-type flag from the PDG id (``is_muon``, ...), a jagged branch,
``"mask"`` (1 for a real object), a number (a constant for every real object), or ``"pad"``
(the data does not have it). Variables the table does not name are ``"pad"`` too, and the
audit report says so loudly: a generator-level sample has no track impact parameters, and
a tagger fed their pad value sees jets unlike those it was trained on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from hepaudit.data.constituents import (
    DERIVED_FEATURES,
    derive_feature,
    jet_axis,
    momenta_from_cartesian,
    momenta_from_ptetaphi,
)
from hepaudit.data.pid import PID_FLAGS, pid_flag
from hepaudit.data.preprocess_json import CmsVariable, InputSpec, Preprocess, VariableInfo, read_preprocess_json
from hepaudit.errors import ConfigError
from hepaudit.lazy import lazy_module

if TYPE_CHECKING:
    import awkward as ak
else:  # loaded on first use (hepaudit.lazy): registering plugins imports none of them
    ak = lazy_module("awkward")

__all__ = ["CmsVariable", "InputSpec", "Preprocess", "VariableInfo", "center_norm_pad", "read_preprocess_json"]

if TYPE_CHECKING:
    from hepaudit.config import InputConfig
    from hepaudit.model.graph import TensorInfo

#: Variable sources with a meaning of their own (everything else is a derived feature or a branch).
MASK, PAD = "mask", "pad"
_INF_LIMIT = 1e32  # CMSSW's catch_infs treats |x| > 1e32 as infinite


def center_norm_pad(values: np.ndarray, counts: np.ndarray, info: VariableInfo, length: int) -> np.ndarray:
    """CMSSW's ``center_norm_pad`` for one variable: (N, ≥length) raw values, the per-jet
    object counts -> (N, length) float32 normalised, clipped and padded."""
    x = values[:, :length].astype(np.float64)
    bad = ~np.isfinite(x) | (np.abs(np.nan_to_num(x)) > _INF_LIMIT)
    x = np.where(bad, info.replace_inf_value, x)
    out = np.clip((x - info.median) * info.norm_factor, info.lower_bound, info.upper_bound)
    real = np.arange(length)[None, :] < counts[:, None]
    return np.where(real, out, info.pad).astype(np.float32)


def _dense(jagged: ak.Array, length: int) -> np.ndarray:
    """A jagged per-object array as a dense (N, length) float64, NaN beyond each jet's count."""
    padded = ak.pad_none(jagged, length, axis=1, clip=True)
    return ak.to_numpy(ak.fill_none(padded, np.nan)).astype(np.float64)


@dataclass
class CmsInput:
    """How one ``kind = "cms"`` input is built: variables, sources, normalisation, length."""

    name: str
    var_names: tuple[str, ...]
    sources: dict[str, str | float]
    infos: dict[str, VariableInfo]
    length: int
    momentum: tuple[str, ...] | None  # the four branches, Cartesian or polar (see MomentumBranches)
    cartesian: bool
    pid: str | None
    warnings: list[str] = field(default_factory=list)
    particles_first: bool = False  # layout = "particles": (N, P, C) instead of (N, C, P)

    @property
    def is_mask(self) -> bool:
        """An input that only holds masks (pf_mask): no features for the explainers."""
        return all(self.sources[v] == MASK or (self.sources[v] == PAD and "mask" in v.lower())
                   for v in self.var_names)

    @property
    def branches(self) -> list[str]:
        """Jagged branches the input reads."""
        out = list(self.momentum or ())
        if self.pid and any(s in PID_FLAGS for s in self.sources.values()):
            out.append(self.pid)
        out += [s for s in self.sources.values() if isinstance(s, str) and _is_branch(s) and s not in out]
        return out

    def build(self, arrays: ak.Array) -> np.ndarray:
        """(N, C, P) float32 for a chunk (or (N, P, C)), C in ``var_names`` order, P = ``length``."""
        n = len(arrays)
        order = parts = jet = None
        counts: np.ndarray | None = None
        if self.momentum:
            a, b, c, d = (arrays[x] for x in self.momentum)
            parts = momenta_from_cartesian(a, b, c, d) if self.cartesian else momenta_from_ptetaphi(a, b, c, d)
            order = ak.argsort(parts.pt, axis=1, ascending=False, stable=True)  # CMSSW sorts PF candidates by pT
            parts = parts[order]
            jet = jet_axis(parts)
            counts = ak.to_numpy(ak.num(parts, axis=1))
        channels = []
        for var in self.var_names:
            source = self.sources[var]
            info = self.infos[var]
            if source == PAD:
                channels.append(np.full((n, self.length), info.pad, np.float32))
                continue
            if isinstance(source, float):
                raw: ak.Array | None = None
            elif source == MASK:
                raw = None
                source = 1.0
            elif source in DERIVED_FEATURES:
                raw = derive_feature(source, parts, jet)
            elif source in PID_FLAGS:
                assert self.pid is not None
                raw = pid_flag(source, arrays[self.pid][order] if order is not None else arrays[self.pid])
            else:
                raw = arrays[source][order] if order is not None else arrays[source]
            if counts is None:  # no momentum: the objects are those of the first branch read
                if raw is None:
                    raise ConfigError(f"inputs.{self.name}: a constant or \"mask\" needs momentum = {{...}} "
                                      "to know how many objects each jet has")
                counts = ak.to_numpy(ak.num(raw, axis=1))
            values = np.full((n, self.length), float(source)) if raw is None else _dense(raw, self.length)
            channels.append(center_norm_pad(values, counts, info, self.length))
        if not channels:
            return np.zeros((n, self.length, 0) if self.particles_first else (n, 0, self.length), np.float32)
        return np.stack(channels, axis=2 if self.particles_first else 1)


def _is_branch(source: str) -> bool:
    return source not in (MASK, PAD) and source not in DERIVED_FEATURES and source not in PID_FLAGS


def _row(value: object) -> CmsVariable:
    if isinstance(value, CmsVariable):
        return value
    return CmsVariable(source=value)  # type: ignore[arg-type]


def cms_input(cfg: InputConfig, tensor: TensorInfo) -> CmsInput:
    """Resolve one ``kind = "cms"`` table against preprocess.json and the model's input."""
    where = f"inputs.{cfg.name}"
    table: Mapping[str, object] = dict(cfg.variables or {})
    spec: InputSpec | None = None
    pre: Preprocess | None = None
    if cfg.preprocess_json:
        pre = read_preprocess_json(cfg.preprocess_json)
        if cfg.name not in pre.inputs:
            raise ConfigError(f"{where}: {cfg.preprocess_json} has no input {cfg.name!r} "
                              f"(it lists {', '.join(pre.input_names)})")
        spec = pre.inputs[cfg.name]
        var_names = spec.var_names
    else:
        var_names = tuple(table)  # no json: the variable table, in its order, is the input
        if not var_names:
            raise ConfigError(f"{where}: kind = \"cms\" needs preprocess_json or a variables table")
    shape = tensor.shape
    first = cfg.layout == "particles"
    c_axis, p_axis = (2, 1) if first else (1, 2)
    channels = shape[c_axis] if len(shape) >= 3 else None
    if isinstance(channels, int) and channels != len(var_names):
        hint = "" if first or not isinstance(shape[2] if len(shape) >= 3 else None, int) or shape[2] != len(
            var_names) else "; for a channels-last input (N, P, C) set layout = \"particles\""
        raise ConfigError(f"{where}: the model input {cfg.name!r} has {channels} channels, shape "
                          f"{tuple('N' if not isinstance(s, int) else s for s in shape)}, but "
                          f"{len(var_names)} variables are configured{hint}")
    model_length = shape[p_axis] if len(shape) >= 3 and isinstance(shape[p_axis], int) else None
    length = spec.var_length if spec else (cfg.max_particles or model_length)
    if length is None:
        raise ConfigError(f"{where}: set max_particles (the padded length): the model's input does not fix it")
    if model_length is not None and model_length != length:
        raise ConfigError(f"{where}: the model expects {model_length} objects per jet, "
                          f"{'preprocess.json var_length' if spec else 'max_particles'} says {length}")
    if pre is not None and cfg.variables:
        # one table may serve every input of the json (name = "*"), so check against all of them
        known = {v for s in pre.inputs.values() for v in s.var_names}
        unknown = [v for v in cfg.variables if v not in known]
        if unknown:
            raise ConfigError(f"{where}.variables: {unknown[0]!r} is not a variable of any input in "
                              f"{cfg.preprocess_json}")
    sources: dict[str, str | float] = {}
    infos: dict[str, VariableInfo] = {}
    missing: list[str] = []
    for var in var_names:
        row = _row(table[var]) if var in table else CmsVariable(source=PAD)
        base = spec.infos[var] if spec else VariableInfo()
        infos[var] = base.overridden(row)
        source = row.source
        if isinstance(source, (int, float)) and not isinstance(source, bool):
            source = float(source)
        sources[var] = source
        if source == PAD and "mask" not in var.lower():
            missing.append(var)
        if isinstance(source, str) and source in DERIVED_FEATURES and cfg.momentum is None:
            raise ConfigError(f"{where}.variables.{var}: {source!r} is derived from the constituents' "
                              "four-momenta: set momentum = {...}")
        if isinstance(source, str) and source in PID_FLAGS and not cfg.pid:
            raise ConfigError(f"{where}.variables.{var}: {source!r} needs pid = \"BRANCH\" (the PDG id branch)")
    mom = cfg.momentum
    warnings = []
    if missing:
        warnings.append(
            f"inputs.{cfg.name}: {len(missing)} of {len(var_names)} variables are not in the data and are "
            f"set to their pad value for every object: {', '.join(missing)}. The tagger sees jets unlike "
            "those it was trained on; read its scores and explanations with that in mind.")
    return CmsInput(cfg.name, tuple(var_names), sources, infos, int(length),
                    mom.branches if mom else None, bool(mom and mom.px), cfg.pid, warnings, first)
