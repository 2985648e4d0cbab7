"""The findings' noise levels against their definitions, computed independently."""

from __future__ import annotations

import numpy as np
import pytest

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


def test_spearman_is_scipys() -> None:
    from scipy.stats import spearmanr

    from hepaudit.metrics import spearman

    rng = np.random.default_rng(4)
    for _ in range(50):
        a = rng.integers(0, 6, 30).astype(float)  # ties, as rankings with zeros have
        b = a + rng.normal(0, 2, 30)
        assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)


def test_auc_interval_matches_the_hanley_mcneil_error() -> None:
    """The performance AUC's bootstrap interval (logit histograms under Poisson weights) against
    the analytic standard error of the Mann–Whitney AUC (Hanley & McNeil 1982)."""
    from hepaudit.bootstrap import poisson_weights
    from hepaudit.executors.partitions import BOOT_LOGIT_BINS
    from hepaudit.report.performance import auc_interval, roc_from_histograms

    rng = np.random.default_rng(2)
    n = 4000
    labels = (np.arange(n) % 2).astype(np.int8)
    logit = rng.normal(0, 1, n) + 1.2 * labels
    fine = np.linspace(-20, 20, 8001)
    hist = np.stack([np.histogram(logit[labels == c], fine)[0] for c in (0, 1)]).astype(float)
    auc = roc_from_histograms(hist[0], hist[1])[2]
    weights = poisson_weights(np.arange(n), 0, 400)
    reps = np.stack([np.stack([np.histogram(logit[labels == c], BOOT_LOGIT_BINS, weights=w[labels == c])[0]
                               for c in (0, 1)]) for w in weights])
    low, high = auc_interval(auc, reps)
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    n1 = n0 = n // 2
    se = np.sqrt((auc * (1 - auc) + (n1 - 1) * (q1 - auc**2) + (n0 - 1) * (q2 - auc**2)) / (n1 * n0))
    assert (high - low) / 2 == pytest.approx(1.96 * se, rel=0.15)
    assert low < auc < high


def test_first_layer_scale_is_the_rms_of_the_weighted_inputs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The guard's estimate √(Σ_k W_jk² E[x_k²]) against the weighted inputs W·x computed in numpy
    on the same jets (independent features: the cross terms average out)."""
    import re
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from builders import dense_weights, mlp_model, save, toml_dumps, write_features

    import hepaudit

    rng = np.random.default_rng(6)
    x = rng.normal(0, 1, (4000, 4)) * np.array([300.0, 50.0, 10.0, 1.0])
    labels = (np.arange(4000) % 2).astype(np.int32)
    weights = dense_weights([4, 16, 1], seed=3)
    save(mlp_model(weights), tmp_path / "m.onnx")
    write_features(tmp_path / "j.root", x, labels)
    (tmp_path / "a.toml").write_text(toml_dumps({
        "model": {"path": "m.onnx"}, "data": {"files": ["j.root"], "tree": "jets", "label": "is_signal"},
        "inputs": [{"name": "x", "kind": "jet", "branches": [f"f{k}" for k in range(4)]}],
        "execution": {"progress": False}}) + toml_dumps({"explainers.dauc": {}}))
    report = hepaudit.audit(tmp_path / "a.toml", out=None)
    text = next(w for w in report.warnings if "first layer" in w)
    reported = float(re.search(r"RMS ([0-9.e+]+),", text).group(1))  # type: ignore[union-attr]
    direct = float(np.sqrt(np.mean((x.astype(np.float32).astype(np.float64) @ weights[0][0]) ** 2)))
    assert reported == pytest.approx(direct, rel=0.05)
    assert "'f0'" in text
