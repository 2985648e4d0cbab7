"""Deterministic per-jet keys: samples that depend on the jets, never on chunks or partitions.

A jet's key is the splitmix64 finaliser of its entry number mixed with a seed. Keeping the
jets with the smallest keys (a bottom-k reservoir) gives the same sample whatever the
chunking, the partitions or the order their states are merged in: the union of two
reservoirs cut again to size is the reservoir of the union. Explainers that sample jets
(SHAP's jets and background, the latent sample, the OOD halves) all key them here.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def mix64(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser of unsigned 64-bit integers (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def to_unit(keys: np.ndarray) -> np.ndarray:
    """64-bit keys as uniform floats in [0, 1) (their top 53 bits)."""
    return (keys >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def seeded_keys(entries: np.ndarray, seed: int) -> np.ndarray:
    """A 64-bit key per entry: ``mix64(entry + seed · golden ratio)``."""
    with np.errstate(over="ignore"):
        return mix64(np.asarray(entries).astype(np.uint64) + np.uint64(seed) * GOLDEN)


def salted_uniform(entries: np.ndarray, salt: int) -> np.ndarray:
    """A uniform key in [0, 1) per entry: ``mix64((entry XOR salt) + golden ratio)``."""
    with np.errstate(over="ignore"):
        z = (np.asarray(entries).astype(np.uint64) ^ np.uint64(salt & 0xFFFFFFFFFFFFFFFF)) + GOLDEN
    return to_unit(mix64(z & _MASK64))


@lru_cache(maxsize=1024)  # SeedSequence takes ~0.5 ms, and a chunk's bootstrap asks for R salts
def salt_for(seed: int, purpose: str) -> int:
    """A 64-bit salt from the seed and a purpose string, so different samples of one seed differ."""
    state = np.random.SeedSequence([seed, *purpose.encode()]).generate_state(2, np.uint32)
    return int(state.view(np.uint64)[0])
