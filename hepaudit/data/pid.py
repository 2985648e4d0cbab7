"""Particle-flow candidate types from PDG ids: the ``is_electron`` ... ``is_neutral_hadron`` flags.

CMS taggers (ParticleNet, DeepAK8) take one-hot flags of the particle-flow candidate type:
electron, muon, photon, charged hadron, neutral hadron. A generator-level sample has PDG ids
instead; this module maps one to the other. Leptons and photons are identified by |id|
(11, 13, 22); every other id is a charged or a neutral hadron by its electric charge.
Neutrinos (12, 14, 16) are no PF candidate: every flag is 0.

The charges of the long-lived hadrons a detector sees are in a small built-in table, so the
common case needs nothing else. Other ids (e.g. an undecayed B meson in a toy sample) are
looked up in the optional ``particle`` package (``pip install particle``), imported only then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from hepaudit.errors import DataError
from hepaudit.lazy import lazy_module

if TYPE_CHECKING:
    import awkward as ak
else:  # loaded on first use (hepaudit.lazy): registering plugins imports none of them
    ak = lazy_module("awkward")

#: The PF-candidate flags, in CMS's naming order (pfcand_isMu, isEl, isChargedHad, isGamma, isNeutralHad).
PID_FLAGS: tuple[str, ...] = ("is_muon", "is_electron", "is_charged_hadron", "is_photon", "is_neutral_hadron")

_LEPTONS_PHOTON = {11: "is_electron", 13: "is_muon", 22: "is_photon"}
_NEUTRINOS = {12, 14, 16}
#: |PDG id| -> |charge| for the hadrons that reach the detector (stable or long-lived in generators).
_HADRON_CHARGE: dict[int, int] = {
    211: 1, 321: 1, 2212: 1, 3112: 1, 3222: 1, 3312: 1, 3334: 1,  # pi+, K+, p, Sigma-, Sigma+, Xi-, Omega-
    111: 0, 130: 0, 310: 0, 311: 0, 2112: 0, 3122: 0, 3212: 0, 3322: 0,  # pi0, K0L, K0S, K0, n, Lambda, Sigma0, Xi0
}


def _charge_from_particle_package(pids: list[int]) -> dict[int, int]:
    try:
        from particle import Particle  # optional: only for ids outside the built-in table
    except ImportError:
        raise DataError(f"PDG ids {sorted(pids)[:8]} are not in hepaudit's built-in table of PF candidate "
                        "types; install the optional `particle` package (pip install particle) to classify "
                        "them") from None
    out = {}
    for pid in pids:
        try:
            charge = Particle.from_pdgid(pid).charge
        except Exception:
            raise DataError(f"PDG id {pid} is unknown to the `particle` package: cannot tell its PF type") from None
        out[pid] = int(round(abs(charge or 0)))
    return out


def pf_type(abs_pid: np.ndarray) -> dict[str, np.ndarray]:
    """The five flags (float32 0/1) for an array of |PDG id|."""
    abs_pid = np.asarray(abs_pid, dtype=np.int64)
    unique = [int(u) for u in np.unique(abs_pid)]
    unknown = [u for u in unique if u not in _LEPTONS_PHOTON and u not in _NEUTRINOS and u not in _HADRON_CHARGE]
    charges = dict(_HADRON_CHARGE)
    if unknown:
        charges.update(_charge_from_particle_package(unknown))
    kind_of: dict[int, str | None] = {}
    for u in unique:
        if u in _LEPTONS_PHOTON:
            kind_of[u] = _LEPTONS_PHOTON[u]
        elif u in _NEUTRINOS:
            kind_of[u] = None
        else:
            kind_of[u] = "is_charged_hadron" if charges[u] else "is_neutral_hadron"
    flags = {name: np.zeros(abs_pid.shape, np.float32) for name in PID_FLAGS}
    for u, kind in kind_of.items():
        if kind is not None:
            flags[kind][abs_pid == u] = 1.0
    return flags


def pid_flag(name: str, pid: ak.Array) -> ak.Array:
    """One flag (see :data:`PID_FLAGS`) for a jagged array of PDG ids, jagged like it."""
    if name not in PID_FLAGS:
        raise KeyError(f"unknown particle-type flag {name!r}; known: {', '.join(PID_FLAGS)}")
    counts = ak.num(pid, axis=1)
    flat = np.abs(ak.to_numpy(ak.flatten(pid)))
    return ak.unflatten(pf_type(flat)[name], counts)
