"""Error bars (contract §5): the Poisson bootstrap against the spread of the same estimate over
disjoint subsamples, its independence of chunking, and the agreement's τ interval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import uproot
from builders import write_jets

import hepaudit
from hepaudit.bootstrap import poisson_weights
from hepaudit.testing import tiny_audit


def _config(folder: Path, explainers: str, data: str, execution: str = "") -> Path:
    config = folder / "audit.toml"
    if not config.exists():  # the data once: a test may add branches to it
        config = tiny_audit(folder, {"mad": {}}, n=8000, step_size=1000)
    text = config.read_text().replace('weight = "weight"\n', "")
    if "step_size" in data:
        text = text.replace("step_size = 1000\n", "")
    text = text[:text.index("[execution]")] + "[execution]\nprogress = false\n" + execution + "\n" + explainers
    text = text.replace('files = ["jets.root"]', f'files = ["jets.root"]\n{data}')
    path = folder / f"boot_{abs(hash((data, execution))) % 10**6}.toml"
    path.write_text(text)
    return path


def test_bootstrap_error_matches_the_spread_over_disjoint_subsamples(tmp_path: Path) -> None:
    """K = 16 disjoint blocks of 500 jets: Var(MAD over 8000) ≈ Var(MAD over a block) / 16."""
    _config(tmp_path, "", "")
    with uproot.open(tmp_path / "jets.root") as f:
        arrays = f["jets"].arrays(library="np")
    arrays["idx"] = np.arange(len(arrays["is_signal"]), dtype=np.float64)
    write_jets(tmp_path / "jets.root", arrays)
    mad = "[explainers.mad]\n"
    full = hepaudit.audit(_config(tmp_path, mad, "", "bootstrap = 200"), out=None).explainers["mad"]
    std = {s.feature: s.score_std for s in full.feature_importance}
    blocks = []
    for k in range(16):
        cut = f'cut = "idx >= {500 * k} & idx < {500 * (k + 1)}"'
        part = hepaudit.audit(_config(tmp_path, mad, cut, "bootstrap = 0"), out=None).explainers["mad"]
        assert part.feature_importance[0].score_std is None  # bootstrap = 0: no error bars
        blocks.append({s.feature: s.score for s in part.feature_importance})
    ratios = []
    for name in std:
        spread = np.std([b[name] for b in blocks], ddof=1) / np.sqrt(16)
        ratios.append(std[name] / spread)
    assert 0.7 < float(np.median(ratios)) < 1.3, ratios
    ci = full.feature_importance[0].score_ci95
    assert ci[0] < full.feature_importance[0].score < ci[1]


def test_bootstrap_does_not_depend_on_chunking(tmp_path: Path) -> None:
    a = _config(tmp_path, "[explainers.mad]\n[explainers.dauc]\n", "step_size = 333")
    b = _config(tmp_path, "[explainers.mad]\n[explainers.dauc]\n", "step_size = 2000")
    ra, rb = hepaudit.audit(a, out=tmp_path / "a"), hepaudit.audit(b, out=None)
    for name in ("mad", "dauc"):
        sa = {s.feature: s.score_std for s in ra.explainers[name].feature_importance}
        sb = {s.feature: s.score_std for s in rb.explainers[name].feature_importance}
        for f in sa:
            assert abs(sa[f] - sb[f]) <= 1e-9 * (1 + abs(sa[f])), (name, f)
    agreement = json.loads((tmp_path / "a" / "report.json").read_text())["agreement"]
    pair = next(p for p in agreement if {p["a"], p["b"]} == {"mad", "dauc"})
    low, high = pair["kendall_tau_ci95"]
    assert low <= high and -1 <= low and high <= 1


def test_poisson_weights_are_keyed_by_entry() -> None:
    entries = np.arange(1000, 3000)
    w = poisson_weights(entries, 7, 5)
    np.testing.assert_array_equal(poisson_weights(entries[500:], 7, 5), w[:, 500:])
    assert abs(w.mean() - 1) < 0.05 and abs(w.var() - 1) < 0.08
    assert not np.array_equal(poisson_weights(entries, 8, 5), w)


def test_poisson_counts_are_the_inverse_cdf_of_the_keys() -> None:
    """The fast draw (three comparisons, a search for the rest) is the Poisson(1) inverse CDF
    of each jet's uniform key, as a sorted search over the whole CDF finds it; values on the
    CDF's steps and in the far tail included."""
    from hepaudit.bootstrap import _CDF, _inverse_cdf, poisson_counts
    from hepaudit.sampling import salt_for, salted_uniform

    rng = np.random.default_rng(5)
    u = np.concatenate([rng.uniform(size=200_000), _CDF[:12], np.nextafter(_CDF[:12], 0),
                        1 - rng.uniform(0, 1e-9, 100)])
    np.testing.assert_array_equal(_inverse_cdf(u), np.searchsorted(_CDF, u, side="right"))
    entries = np.arange(50_000, 90_000)
    counts = poisson_counts(entries, 3, 4)
    assert counts.dtype == np.uint8
    for r in range(4):
        keys = salted_uniform(entries, salt_for(3, f"bootstrap-{r}"))
        np.testing.assert_array_equal(counts[r], np.searchsorted(_CDF, keys, side="right"))
    np.testing.assert_array_equal(poisson_weights(entries, 3, 4), counts.astype(np.float64))


@pytest.mark.parametrize("decimals", [2, 4, None])
@pytest.mark.parametrize("block", [None, 7])
def test_auc_replicates_equal_weighted_aucs(block: int | None, decimals: int | None,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """One sort for every replicate gives each replicate's weighted AUC exactly, ties ½ (all
    replicates at once, or a few at a time as on millions of jets), whether most signal jets
    tie with the background (scores to 2 decimals), a few do (4 decimals) or none."""
    from hepaudit import metrics
    from hepaudit.metrics import roc_auc, roc_auc_replicates

    if block is not None:  # blocks of 7 jets: a tie group and the signal's reads cross block edges
        monkeypatch.setattr(metrics, "REPLICATE_BLOCK_JETS", block)

    rng = np.random.default_rng(0)
    scores = rng.normal(size=3000)
    if decimals is not None:
        scores = np.round(scores, decimals)
    labels = rng.integers(0, 2, 3000)
    sig, bkg = np.sort(scores[labels == 1]), np.sort(scores[labels == 0])
    tied = np.mean(np.searchsorted(bkg, sig, "left") != np.searchsorted(bkg, sig, "right"))
    assert {2: tied > 0.5, 4: 0.01 < tied < 0.5, None: tied == 0}[decimals]
    weights = poisson_weights(np.arange(3000), 1, 6) * rng.uniform(0.5, 2.0, 3000)
    np.testing.assert_allclose(roc_auc_replicates(scores, labels, weights),
                               [roc_auc(scores, labels, w) for w in weights], rtol=1e-12)
    # as ΔAUC holds them: uint8 counts per jet and replicate, times the jets' own weights
    counts = poisson_weights(np.arange(3000), 1, 6).T.astype(np.uint8)
    own = rng.uniform(0.5, 2.0, 3000)
    np.testing.assert_allclose(metrics.ReplicateAUC(labels, counts, own)(scores),
                               [roc_auc(scores, labels, c * own) for c in counts.T], rtol=1e-12)
    np.testing.assert_allclose(metrics.ReplicateAUC(labels, counts)(scores),
                               [roc_auc(scores, labels, c.astype(float)) for c in counts.T], rtol=1e-12)


def test_clipped_variants_have_intervals(tmp_path: Path) -> None:
    """MAD and LRP with the paper's IQR clipping carry error bars too (the sample's fences, the
    replicates' weights), of the size of the unclipped ones' on these well-behaved jets."""
    explainers = ('[explainers.mad]\niqr_clip = "signed"\n[explainers.lrp]\niqr_clip = true\n'
                  'normalize = "signed_sum"\n')
    report = hepaudit.audit(_config(tmp_path, explainers, "", "bootstrap = 16"), out=None)
    plain = hepaudit.audit(_config(tmp_path, "[explainers.mad]\n[explainers.lrp]\n", "step_size = 999",
                                   "bootstrap = 16"), out=None)
    for name in ("mad", "lrp"):
        clipped = report.explainers[name].feature_importance
        for s in clipped:
            assert s.score_std is not None and s.score_std > 0
            assert s.score_ci95[0] <= s.score <= s.score_ci95[1] or abs(s.score - s.score_ci95[0]) < 3 * s.score_std
        ratio = np.median([s.score_std / s.score for s in clipped]) / np.median(
            [s.score_std / s.score for s in plain.explainers[name].feature_importance])
        assert 0.2 < ratio < 5, (name, ratio)


def test_agreement_says_whether_a_difference_is_within_noise() -> None:
    """Two methods with the same underlying ranking, measured with noise as large as the gaps
    between scores, differ within noise; two with reversed rankings and little noise do not."""
    from hepaudit.bootstrap import Replicates
    from hepaudit.report.assemble import agreement
    from hepaudit.results import ExplainerResult, FeatureScore, sorted_scores

    rng = np.random.default_rng(5)
    names = [f"f{k}" for k in range(30)]
    truth = np.linspace(1.0, 0.0, 30)

    def method(name: str, centre: np.ndarray, noise: float) -> ExplainerResult:
        sample = centre + noise * rng.normal(size=30)
        reps = centre[None, :] + noise * rng.normal(size=(32, 30))
        ranking = sorted_scores([FeatureScore(n, float(v)) for n, v in zip(names, sample)])
        return ExplainerResult(name=name, feature_importance=ranking, replicates=[Replicates("features", names, reps)])

    noisy = {"a": method("a", truth, 0.5), "b": method("b", truth, 0.5)}
    (pair,) = agreement(noisy)
    assert pair.within_noise is True and pair.noise_kendall_tau is not None and pair.noise_kendall_tau < 0.6
    # the noise level from its definition, with scipy's Kendall τ: the lower of the two methods'
    # median τ between consecutive pairs of replicates
    from scipy.stats import kendalltau

    def self_tau(result: ExplainerResult) -> float:
        reps = result.replicates[0].values
        return float(np.median([kendalltau(x, y)[0] for x, y in zip(reps[0::2], reps[1::2])]))

    assert pair.noise_kendall_tau == pytest.approx(min(self_tau(noisy["a"]), self_tau(noisy["b"])), abs=1e-12)
    clear = {"a": method("a", truth, 0.01), "b": method("b", truth[::-1].copy(), 0.01)}
    (pair,) = agreement(clear)
    assert pair.within_noise is False and pair.kendall_tau < 0 and pair.noise_kendall_tau > 0.9
    bare = {n: ExplainerResult(name=n, feature_importance=r.feature_importance) for n, r in noisy.items()}
    assert agreement(bare)[0].within_noise is None  # no replicates: no verdict


@pytest.mark.parametrize("label", [0, 1])
def test_auc_replicates_of_one_class_are_undefined(label: int) -> None:
    """Every jet of one class: no pair to order, so every replicate's AUC is NaN (not an error)."""
    from hepaudit.metrics import ReplicateAUC

    scores = np.random.default_rng(2).random(40)
    counts = poisson_weights(np.arange(40), 1, 3).T.astype(np.uint8)
    assert np.isnan(ReplicateAUC(np.full(40, label), counts)(scores)).all()
