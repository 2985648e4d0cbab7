"""hepaudit.binning: equal-width histograms identical to numpy's, values on the edges included."""

from __future__ import annotations

import numpy as np
import pytest

from hepaudit.binning import histogram2d_uniform, uniform_bins


@pytest.mark.parametrize("bins", [1, 7, 24, 100])
def test_histogram2d_matches_numpy_bit_for_bit(bins: int) -> None:
    rng = np.random.default_rng(bins)
    extent = 0.8
    edges = np.linspace(-extent, extent, bins + 1)
    # values on every edge, just beside them, outside the range, NaN, and plain random ones
    special = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf),
                              [-1.0, 1.0, np.nan, -extent, extent]])
    x = np.concatenate([rng.uniform(-1, 1, 20000), special, rng.permutation(special)])
    y = np.concatenate([rng.uniform(-1, 1, 20000), rng.permutation(special), special])
    w = rng.normal(size=len(x))
    box = ((-extent, extent), (-extent, extent))
    expected = np.histogram2d(x, y, bins=bins, range=[list(b) for b in box], weights=w)[0]
    np.testing.assert_array_equal(histogram2d_uniform(x, y, bins, box, w), expected)
    counts = np.histogram2d(x, y, bins=bins, range=[list(b) for b in box])[0]
    np.testing.assert_array_equal(histogram2d_uniform(x, y, bins, box), counts)


def test_uniform_bins_agree_with_a_sorted_search() -> None:
    rng = np.random.default_rng(3)
    v = np.concatenate([rng.uniform(0.1, 2.3, 50000), np.linspace(0.1, 2.3, 31)])
    index = uniform_bins(v, 0.1, 2.3, 30)
    edges = np.linspace(0.1, 2.3, 31)
    expected = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, 29)
    np.testing.assert_array_equal(index, expected)
