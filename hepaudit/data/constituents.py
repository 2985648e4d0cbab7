"""Constituent four-momenta and the per-particle features derived from them.

Everything here works on whole chunks at once: jagged awkward arrays of vector
``Momentum4D`` records in, padded numpy arrays out. The jet axis is always the
four-vector sum of *all* of a jet's constituents, before any truncation.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from hepaudit.errors import DataError
from hepaudit.lazy import lazy_module

if TYPE_CHECKING:
    import awkward as ak
    import vector
else:  # loaded on first use (hepaudit.lazy): registering plugins imports none of them
    ak = lazy_module("awkward")
    vector = lazy_module("vector")

_vector_registered = False
_registering = threading.Lock()

#: Import vector with sympy hidden from it. vector imports sympy, when it is installed (torch
#: brings it), only to offer a symbolic backend hepaudit never uses, and that import is most
#: of a second of every audit's start-up. Set by the command line, which owns its process; a
#: notebook's vector keeps its sympy backend. sympy itself stays importable afterwards.
VECTOR_WITHOUT_SYMPY = False


def momentum4d(fields: dict[str, ak.Array]) -> ak.Array:
    """The fields zipped into vector's ``Momentum4D`` records; vector's awkward behaviours are
    registered on first use (importing hepaudit's plugins loads neither vector nor awkward)."""
    _register_vector()
    return ak.zip(fields, with_name="Momentum4D")


def _register_vector() -> None:
    global _vector_registered
    if _vector_registered:
        return
    with _registering:  # blocks of jets are built on several threads
        if _vector_registered:
            return
        if VECTOR_WITHOUT_SYMPY and "vector" not in sys.modules and "sympy" not in sys.modules:
            sys.modules["sympy"] = None  # type: ignore[assignment]  # `import sympy` raises ImportError
            try:
                importlib.import_module("vector")
            finally:
                if "sympy" in sys.modules and sys.modules["sympy"] is None:
                    del sys.modules["sympy"]
        vector.register_awkward()
        _vector_registered = True


#: Features every constituents input can ask for by name.
DERIVED_FEATURES: tuple[str, ...] = (
    "pt", "eta", "phi", "energy", "mass", "log_pt", "log_energy",
    "pt_rel", "energy_rel", "deta", "dphi", "dr", "px", "py", "pz",
    "log_pt_rel", "log_energy_rel", "abs_eta", "etarel", "phirel",
)


def _float64(values: ak.Array) -> ak.Array:
    """Preprocessing arithmetic runs in float64 whatever the branch type; the built input is
    cast to the model's dtype once, at the end (builders ``_fit_rank``)."""
    return ak.values_astype(values, np.float64)


def momenta_from_cartesian(px: ak.Array, py: ak.Array, pz: ak.Array, energy: ak.Array) -> ak.Array:
    """Zip jagged px, py, pz, E into vector ``Momentum4D`` records (float64)."""
    components = {"px": _float64(px), "py": _float64(py), "pz": _float64(pz), "E": _float64(energy)}
    _same_counts(components)
    return momentum4d(components)


def momenta_from_ptetaphi(pt: ak.Array, eta: ak.Array, phi: ak.Array, mass: ak.Array) -> ak.Array:
    """Zip jagged pt, eta, phi, mass into vector ``Momentum4D`` records (float64)."""
    components = {"pt": _float64(pt), "eta": _float64(eta), "phi": _float64(phi), "mass": _float64(mass)}
    _same_counts(components)
    return momentum4d(components)


def _same_counts(components: dict[str, ak.Array]) -> None:
    """The four components must list the same constituents in every jet (a DataError otherwise:
    zipping them would fail deep in awkward with a broadcasting message)."""
    counts = {k: ak.to_numpy(ak.num(v, axis=1)) for k, v in components.items() if v.ndim > 1}
    if len(counts) < 2:
        return
    (first, ref), *others = counts.items()
    for name, n in others:
        if len(n) == len(ref) and not np.array_equal(n, ref):
            bad = np.flatnonzero(n != ref)
            raise DataError(f"the constituents' {first} and {name} branches list different numbers of "
                            f"constituents in {len(bad)} jets (jet {int(bad[0])} of the chunk: {int(ref[bad[0]])} "
                            f"and {int(n[bad[0]])}); each jet needs one value per constituent in every branch")


def sort_by_pt(parts: ak.Array) -> ak.Array:
    """Constituents in descending pT order within each jet (stable for ties)."""
    return parts[ak.argsort(parts.pt, axis=1, ascending=False, stable=True)]


def _flat(values: ak.Array) -> np.ndarray:
    """The content of a jagged (N, var) array as one float64 numpy array (zero-copy when possible)."""
    return np.asarray(ak.to_numpy(ak.flatten(values, axis=1)), dtype=np.float64)


def pt_ordered_momenta(branches: dict[str, ak.Array]) -> tuple[ak.Array, np.ndarray | None, np.ndarray]:
    """Constituents as pT-ordered ``Momentum4D``, from jagged branches keyed px/py/pz/energy or pt/eta/phi/mass.

    Works on the flat content with numpy: pT from px and py by vector's formula (the order
    agrees with the ``.pt`` the features then report), no sort at all when every jet is
    already pT-ordered (as most ntuples are), and the records made directly around the flat
    arrays (:func:`momenta_from_flat`). Returns the parts, the permutation of the flat content
    (None when nothing moved) and the counts per jet; apply the permutation to any other
    per-constituent branch with :func:`reorder`.
    """
    _same_counts(branches)
    first = next(iter(branches.values()))
    counts = ak.to_numpy(ak.num(first, axis=1)).astype(np.int64)
    flat = {key: _flat(value) for key, value in branches.items()}
    pt = np.sqrt(flat["px"] ** 2 + flat["py"] ** 2) if "px" in flat else flat["pt"]
    starts = np.zeros(len(pt), dtype=bool)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    starts[offsets[:-1][counts > 0]] = True
    permutation = None
    if len(pt) > 1 and not np.all((pt[1:] <= pt[:-1]) | starts[1:]):
        local = ak.argsort(ak.unflatten(pt, counts), axis=1, ascending=False, stable=True)
        permutation = _flat(local).astype(np.int64) + np.repeat(offsets[:-1], counts)
        flat = {key: value[permutation] for key, value in flat.items()}
    parts = momenta_from_flat({("E" if key == "energy" else key): value for key, value in flat.items()}, offsets)
    return parts, permutation, counts


def momenta_from_flat(fields: dict[str, np.ndarray], offsets: np.ndarray) -> ak.Array:
    """Jagged ``Momentum4D`` records around flat float64 components (px, py, pz, E or pt, eta,
    phi, mass) and the jets' offsets into them, as :func:`momentum4d` zips them: the same
    array, without zip's broadcasting of four jagged arrays (the slowest step of building
    constituent inputs)."""
    _register_vector()
    content = ak.contents.RecordArray([ak.contents.NumpyArray(np.asarray(v, np.float64)) for v in fields.values()],
                                      list(fields), length=int(offsets[-1]),
                                      parameters={"__record__": "Momentum4D"})
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(np.asarray(offsets, np.int64)), content))


def reorder(values: ak.Array, permutation: np.ndarray | None, counts: np.ndarray) -> ak.Array:
    """Apply the pT ordering of :func:`pt_ordered_momenta` to another jagged branch."""
    if permutation is None:
        return values
    return ak.unflatten(ak.to_numpy(ak.flatten(values, axis=1))[permutation], counts)


def jet_axis(parts: ak.Array) -> ak.Array:
    """The jet four-momentum: the sum of all constituents, one record per jet."""
    return momentum4d({
        "px": ak.sum(parts.px, axis=1),
        "py": ak.sum(parts.py, axis=1),
        "pz": ak.sum(parts.pz, axis=1),
        "E": ak.sum(parts.E, axis=1),
    })


def wrap_phi(dphi: ak.Array | np.ndarray) -> ak.Array | np.ndarray:
    """Wrap angle differences to [-pi, pi)."""
    return (dphi + np.pi) % (2 * np.pi) - np.pi


def _safe_log(x: ak.Array) -> ak.Array:
    # log of a zero-momentum constituent would be -inf; clamp to a tiny positive value.
    return np.log(np.maximum(x, 1e-12))


def _deta(parts: ak.Array, jet: ak.Array) -> ak.Array:
    return parts.eta - jet.eta


def _dphi(parts: ak.Array, jet: ak.Array) -> ak.Array:
    return wrap_phi(parts.phi - jet.phi)


_DERIVERS: dict[str, Callable[[ak.Array, ak.Array], ak.Array]] = {
    "pt": lambda p, j: p.pt,
    "eta": lambda p, j: p.eta,
    "phi": lambda p, j: p.phi,
    "energy": lambda p, j: p.E,
    "mass": lambda p, j: p.mass,
    "px": lambda p, j: p.px,
    "py": lambda p, j: p.py,
    "pz": lambda p, j: p.pz,
    "log_pt": lambda p, j: _safe_log(p.pt),
    "log_energy": lambda p, j: _safe_log(p.E),
    "pt_rel": lambda p, j: p.pt / j.pt,
    "energy_rel": lambda p, j: p.E / j.E,
    "deta": _deta,
    "dphi": _dphi,
    "dr": lambda p, j: np.sqrt(_deta(p, j) ** 2 + _dphi(p, j) ** 2),
    "log_pt_rel": lambda p, j: _safe_log(p.pt / j.pt),
    "log_energy_rel": lambda p, j: _safe_log(p.E / j.E),
    "abs_eta": lambda p, j: np.abs(p.eta),
    # CMS's pfcand_etarel: Δη signed so that it points away from η = 0 for either sign of η_jet
    "etarel": lambda p, j: (2.0 * (j.eta > 0) - 1.0) * _deta(p, j),
    "phirel": _dphi,  # CMS's name for Δφ (reco::deltaPhi, wrapped)
}


def derive_feature(name: str, parts: ak.Array, jet: ak.Array) -> ak.Array:
    """One jagged per-constituent feature (see :data:`DERIVED_FEATURES`)."""
    try:
        return _DERIVERS[name](parts, jet)
    except KeyError:
        raise KeyError(f"unknown constituent feature {name!r}; known: {', '.join(DERIVED_FEATURES)}") from None


def pad_jagged(values: ak.Array, max_particles: int, fill: float = 0.0) -> np.ndarray:
    """Pad or truncate a jagged (N, var) array to a dense float64 (N, max_particles)."""
    padded = ak.pad_none(values, max_particles, axis=1, clip=True)
    return ak.to_numpy(ak.fill_none(padded, fill)).astype(np.float64, copy=False)


def padded_cartesian(parts: ak.Array, max_particles: int, keys: tuple[str, ...] = ("px", "py", "pz", "E")
                     ) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    """The first ``max_particles`` constituents' components ``keys`` (of px, py, pz, E) as dense
    float64 (N, max_particles) arrays, padding zero, and the float32 padding mask; None when
    ``parts`` are not Cartesian records (use :func:`pad_jagged` on vector's properties then).

    A gather from the flat content with numpy: no jagged slicing, padding or vector dispatch per
    component, the costliest part of building TopoDNN's inputs."""
    if not {"px", "py", "pz", "E"} <= set(parts.fields):
        return None
    counts = ak.to_numpy(ak.num(parts, axis=1)).astype(np.int64)
    slot = np.arange(max_particles)
    valid = slot[None, :] < counts[:, None]
    index = np.where(valid, (np.cumsum(counts) - counts)[:, None] + slot[None, :], 0)
    dense = {}
    for key in keys:
        flat = _flat(parts[key])
        dense[key] = np.where(valid, flat[index], 0.0) if len(flat) else np.zeros(valid.shape)
    return dense, valid.astype(np.float32)


def pt_eta_phi(px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pT, η, φ of dense Cartesian components, by vector's own formulas (the values its
    ``.pt``, ``.eta``, ``.phi`` give, bit for bit): a null vector has η = φ = 0, one along
    the beam η = ±inf."""
    rho = np.sqrt(px**2 + py**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.nan_to_num(np.arcsinh(pz / rho), nan=np.nan_to_num((pz != 0) * np.inf, posinf=np.nan),
                            posinf=np.inf, neginf=-np.inf)
    return rho, eta, np.arctan2(py, px)


def padding_mask(parts: ak.Array, max_particles: int) -> np.ndarray:
    """1.0 where a real constituent sits, 0.0 for padding: float32 (N, max_particles)."""
    counts = ak.to_numpy(ak.num(parts, axis=1))
    return (np.arange(max_particles)[None, :] < counts[:, None]).astype(np.float32)
