"""The findings' noise levels against their definitions, computed independently."""

from __future__ import annotations

import numpy as np

from hepaudit.explainers.ood.calibration import binned_sums, expected_calibration_error, reliability
from hepaudit.report.findings import calibrated_ece


def test_calibrated_ece_is_the_ece_of_a_calibrated_score_on_as_many_jets() -> None:
    """A perfectly calibrated score (labels drawn with the score's probability) shows an ECE from
    sampling alone; the formula the calibration finding uses predicts its mean."""
    rng = np.random.default_rng(0)
    n, bins = 4000, 15
    eces, floors = [], []
    for _ in range(200):
        p = rng.uniform(0.02, 0.98, n)
        y = (rng.uniform(size=n) < p).astype(np.int8)
        eces.append(expected_calibration_error(p, y, None, bins))
        mean_score, _, weight, _ = reliability(*binned_sums(p, y, None, bins))
        floors.append(calibrated_ece([None if not np.isfinite(m) else float(m) for m in mean_score],
                                     [float(w) for w in weight]))
    ratio = np.mean(eces) / np.mean(floors)
    assert abs(ratio - 1) < 0.1, ratio
