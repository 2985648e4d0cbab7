"""The performance section (contract §5) against exact computations from per_jet.root."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import uproot
from builders import mann_whitney_auc

import hepaudit
from hepaudit.testing import tiny_audit


def test_performance_section_matches_exact_numbers(tmp_path: Path) -> None:
    config = tiny_audit(tmp_path, {"dauc": {}}, n=3000, step_size=700)
    text = config.read_text().replace('weight = "weight"\n', "")  # unweighted: exact checks below
    config.write_text(text)
    report = hepaudit.audit(config, out=tmp_path / "out")
    perf = json.loads((tmp_path / "out" / "report.json").read_text())["sections"]["performance"]
    with uproot.open(tmp_path / "out" / "per_jet.root") as f:
        cols = f["hepaudit"].arrays(["score", "label"], library="np")
    score, label = cols["score"].astype(np.float64), cols["label"]
    exact_auc = mann_whitney_auc(score, label)
    assert abs(perf["auc"] - exact_auc) < 2e-3
    assert perf["auc"] == report.sections[1].data["auc"]
    assert abs(perf["auc"] - report.explainers["dauc"].fields["baseline_auc"]) < 2e-3
    assert perf["accuracy_at_0.5"] == np.mean((score >= 0.5) == (label == 1))
    assert len(perf["roc"]["fpr"]) <= 200 and perf["roc"]["fpr"][0] == 0.0 and perf["roc"]["tpr"][-1] == 1.0
    sig = np.sort(score[label == 1])[::-1]
    bkg = score[label == 0]
    for eff in ("0.3", "0.5", "0.7"):
        cut = sig[int(float(eff) * len(sig)) - 1]  # the score keeping that signal efficiency
        exact = 1.0 / np.mean(bkg >= cut)
        assert abs(perf["background_rejection"][eff] / exact - 1) < 0.05, eff
    assert (tmp_path / "out" / "figures" / "roc.png").exists()


def test_performance_is_weighted(tmp_path: Path) -> None:
    config = tiny_audit(tmp_path, {"dauc": {}}, n=2000, step_size=500)  # weight = "weight"
    hepaudit.audit(config, out=tmp_path / "out")
    perf = json.loads((tmp_path / "out" / "report.json").read_text())["sections"]["performance"]
    with uproot.open(tmp_path / "out" / "per_jet.root") as f:
        cols = f["hepaudit"].arrays(["entry", "score", "label"], library="np")
    with uproot.open(tmp_path / "jets.root") as f:
        weight = f["jets"]["weight"].array(library="np")[cols["entry"]]
    score, label = cols["score"].astype(np.float64), cols["label"]
    assert abs(perf["auc"] - mann_whitney_auc(score, label, weight)) < 2e-3
    assert abs(perf["auc"] - mann_whitney_auc(score, label)) > 1e-4  # the weights matter here
    right = ((score >= 0.5) == (label == 1)).astype(np.float64)
    assert abs(perf["accuracy_at_0.5"] - np.average(right, weights=weight)) < 1e-12
    assert abs(perf["weighted_jets"]["signal"] - np.sum(weight[label == 1])) < 1e-9


def test_inputs_section_histograms_the_leading_features(tmp_path: Path) -> None:
    """Per-class histograms of the top-ranked features, against numpy on the same jets."""
    config = tiny_audit(tmp_path, {"dauc": {}, "mad": {}}, n=1500, step_size=400)
    config.write_text(config.read_text().replace('weight = "weight"\n', ""))
    report = hepaudit.audit(config, out=tmp_path / "out")
    inputs = json.loads((tmp_path / "out" / "report.json").read_text())["sections"]["inputs"]
    hists = inputs["features"]
    assert set(hists) == {"f0", "f1", "f2", "f3"}
    with uproot.open(tmp_path / "jets.root") as f:
        cols = f["jets"].arrays(library="np")
    for name, h in hists.items():
        edges = np.asarray(h["bin_edges"])
        x = np.clip(cols[name].astype(np.float32).astype(np.float64), edges[0], np.nextafter(edges[-1], -np.inf))
        for cls, key in ((1, "signal"), (0, "background")):
            want = np.histogram(x[cols["is_signal"] == cls], edges)[0]
            np.testing.assert_array_equal(h[key], want, err_msg=name)
    assert (tmp_path / "out" / "figures" / "input_features.png").exists()
    assert report.sections[2].key == "inputs"
