"""Named preprocessing recipes: how a tagger's paper turns constituents into its inputs.

A recipe maps pT-ordered constituents (vector ``Momentum4D``, jagged, float64) to a dense
``(N, max_particles, F)`` float64 array plus the mask and feature names; the input builder
casts it to the model's dtype once, at the end. The built-in
recipes follow the definitions in docs/methods.md; plugins add more through the
``hepaudit_register_recipes`` hook. The functions :func:`topodnn_arrays` and
:func:`pfn_arrays` are the same recipes for plain px/py/pz/E arrays, used by the
example training scripts so that training and auditing share one implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hepaudit.data.constituents import (
    jet_axis,
    momenta_from_cartesian,
    pad_jagged,
    padded_cartesian,
    padding_mask,
    pt_eta_phi,
    sort_by_pt,
    wrap_phi,
)
from hepaudit.lazy import lazy_module

if TYPE_CHECKING:
    import awkward as ak
else:  # loaded on first use (hepaudit.lazy): registering plugins imports none of them
    ak = lazy_module("awkward")

#: The paper's pT scale for TopoDNN (Khot, Neubauer & Roy, arXiv:2210.04371).
TOPODNN_PT_SCALE = 1700.0
#: The scale the paper's own code (xAI4toptagger) divides pT by: its training sample's maximum.
XAI4_PT_SCALE = 1679.1593231


@dataclass(frozen=True)
class RecipeOutput:
    """What a recipe returns for one chunk of jets."""

    values: np.ndarray  # (N, P, F) float64
    mask: np.ndarray  # (N, P) float32, 1 = real constituent
    features: tuple[str, ...]  # the F per-particle feature names, in order


#: A recipe: (pT-sorted constituents, jet axis, max_particles) -> RecipeOutput.
Recipe = Callable[["ak.Array", "ak.Array", int], RecipeOutput]  # ak named lazily (hepaudit.lazy)


def topodnn(parts: ak.Array, jet: ak.Array, max_particles: int) -> RecipeOutput:
    """TopoDNN inputs: (pT/1700, eta, phi) after shift, rotation and flip.

    Constituent 0 is moved to (0, 0) (phi differences wrapped to [-pi, pi)); the
    eta-phi plane is rotated about the origin so that constituent 1 lies on the
    negative phi axis; eta is flipped so that sum(pT * eta) >= 0 over the kept
    constituents. Padding stays zero.
    """
    del jet  # TopoDNN frames the jet on its leading constituent, not on the jet axis
    dense = padded_cartesian(parts, max_particles, ("px", "py", "pz"))  # E is not used
    if dense is not None:  # the kept constituents' pT, η, φ from dense arrays, as vector computes them
        components, mask = dense
        pt, eta, phi = pt_eta_phi(components["px"], components["py"], components["pz"])
    else:
        parts = parts[:, :max_particles]  # compute eta and phi only for the constituents kept
        pt = pad_jagged(parts.pt, max_particles)
        eta = pad_jagged(parts.eta, max_particles)
        phi = pad_jagged(parts.phi, max_particles)
        mask = padding_mask(parts, max_particles)

    eta = (eta - eta[:, :1]) * mask
    phi = wrap_phi(phi - phi[:, :1]) * mask

    # Rotate so that constituent 1 sits at angle -pi/2 (negative phi axis).
    has_second = mask[:, 1] > 0 if max_particles > 1 else np.zeros(len(pt), bool)
    angle = np.arctan2(phi[:, 1], eta[:, 1]) if max_particles > 1 else np.zeros(len(pt))
    theta = np.where(has_second, -np.pi / 2 - angle, 0.0)[:, None]
    cos, sin = np.cos(theta), np.sin(theta)
    eta, phi = eta * cos - phi * sin, eta * sin + phi * cos

    flip = np.where(np.sum(pt * eta, axis=1) < 0, -1.0, 1.0)[:, None]
    eta = eta * flip
    values = np.stack([pt / TOPODNN_PT_SCALE, eta, phi], axis=-1)
    values *= mask[:, :, None]  # keep padding exactly zero after the float arithmetic
    return RecipeOutput(values, mask, ("pt", "eta", "phi"))


def _pt_eta_phi(px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pT, η, φ as the xAI4toptagger code computes them: η = 0 along the beam or for a null
    vector, φ = 0 for a vector along the beam."""
    pt = np.hypot(px, py)
    null = (px == 0) & (py == 0) & (pz == 0)
    theta = np.where(null, 0.0, np.arctan2(pt, pz))
    cos = np.cos(theta)
    inside = cos * cos < 1
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.where(inside, -0.5 * np.log((1 - cos) / (1 + cos)), 0.0)
    phi = np.where((px != 0) | (py != 0), np.arctan2(py, px), 0.0)
    return pt, eta, phi


def topodnn_xai4(parts: ak.Array, jet: ak.Array, max_particles: int) -> RecipeOutput:
    """TopoDNN inputs as the paper's own code (xAI4toptagger) builds them.

    pT / 1679.159; η and φ shifted by constituent 0's (its φ wrapped to [−π, π), the
    differences not wrapped); then a 3-D rotation about the x axis, by the angle that takes
    constituent 1's (p_y, p_z) (built from the shifted, scaled pT, η, φ) to the −p_y axis,
    applied to every constituent, which changes their pT, η and φ; then η flipped so that
    Σ pT·η ≥ 0. Padding (a null vector) stays (0, 0, 0). Compare the planar ``topodnn``
    (docs/methods.md): the same frame, a 2-D rotation in the η–φ plane, pT / 1700 untouched.
    """
    del jet
    dense = padded_cartesian(parts, max_particles, ("px", "py", "pz"))  # E is not used
    if dense is not None:
        components, mask = dense
        px, py, pz = components["px"], components["py"], components["pz"]
    else:
        parts = parts[:, :max_particles]
        mask = padding_mask(parts, max_particles)
        px, py, pz = (pad_jagged(parts[c], max_particles) for c in ("px", "py", "pz"))
    pt, eta, phi = _pt_eta_phi(px, py, pz)
    pt = pt / XAI4_PT_SCALE
    shift = phi[:, :1].copy()
    shift = np.where(shift < -np.pi, shift + 2 * np.pi, np.where(shift >= np.pi, shift - 2 * np.pi, shift))
    eta = eta - eta[:, :1]
    phi = phi - shift
    # the paper's code takes every slot, padding included, through the shift and the rotation;
    # a padded slot is a null vector again after it (pT = 0)
    x, y, z = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    if max_particles > 1:
        theta = (np.arctan2(y[:, 1], z[:, 1]) + np.pi / 2)[:, None]
    else:
        theta = np.zeros((len(pt), 1))
    y, z = y * np.cos(theta) - z * np.sin(theta), z * np.cos(theta) + y * np.sin(theta)
    pt, eta, phi = _pt_eta_phi(x, y, z)
    flip = np.where(np.sum(pt * eta, axis=1) < 0, -1.0, 1.0)[:, None]
    values = np.stack([pt, eta * flip, phi], axis=-1) * mask[:, :, None]
    return RecipeOutput(values, mask, ("pt", "eta", "phi"))


def pfn(parts: ak.Array, jet: ak.Array, max_particles: int) -> RecipeOutput:
    """PFN inputs: (pT / sum pT, eta - eta_jet, phi - phi_jet), zero-padded with a mask.

    The pT sum and the jet axis use all constituents, not only the kept ones.
    """
    pt_sum = ak.sum(parts.pt, axis=1)
    mask = padding_mask(parts, max_particles)
    z = pad_jagged(parts.pt / pt_sum, max_particles)
    deta = pad_jagged(parts.eta - jet.eta, max_particles)
    dphi = pad_jagged(wrap_phi(parts.phi - jet.phi), max_particles)
    values = np.stack([z, deta, dphi], axis=-1) * mask[:, :, None]
    return RecipeOutput(values, mask, ("pt_frac", "deta", "dphi"))


#: The recipes hepaudit ships; the plugin hook adds to these.
BUILTIN_RECIPES: dict[str, Recipe] = {"topodnn": topodnn, "topodnn_xai4": topodnn_xai4, "pfn": pfn}


def _apply(recipe: Recipe, px: ak.Array, py: ak.Array, pz: ak.Array, energy: ak.Array,
           max_particles: int) -> RecipeOutput:
    parts = sort_by_pt(momenta_from_cartesian(px, py, pz, energy))
    return recipe(parts, jet_axis(parts), max_particles)


def topodnn_arrays(px: ak.Array, py: ak.Array, pz: ak.Array, energy: ak.Array,
                   max_particles: int = 30) -> np.ndarray:
    """TopoDNN inputs from jagged four-momenta, flattened particle-major: (N, 3 * P) float32."""
    out = _apply(topodnn, px, py, pz, energy, max_particles)
    return out.values.reshape(len(out.values), -1).astype(np.float32)


def pfn_arrays(px: ak.Array, py: ak.Array, pz: ak.Array, energy: ak.Array,
               max_particles: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """PFN ``features`` (N, P, 3) float32 and ``mask`` (N, P) from jagged four-momenta."""
    out = _apply(pfn, px, py, pz, energy, max_particles)
    return out.values.astype(np.float32), out.mask
