"""Event selection (contract §5): data.cut parsed without eval, and max_jets that keeps both
classes. Checked against files filtered beforehand with numpy (the independent computation)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import uproot
from builders import write_jets

import hepaudit
from hepaudit.data.selection import Cut
from hepaudit.errors import ConfigError
from hepaudit.testing import tiny_audit


def test_precedence_functions_and_errors() -> None:
    b = {"a": np.array([0.5, 2.0, 7.0]), "b": np.array([1.0, 6.0, 0.0])}
    # & and | bind looser than comparisons (unlike numpy): what a physicist writes means what they mean
    np.testing.assert_array_equal(Cut("a > 1 & b < 2").mask(b), (b["a"] > 1) & (b["b"] < 2))
    np.testing.assert_array_equal(Cut("a < 1 | a > 5 & b >= 0").mask(b), (b["a"] < 1) | ((b["a"] > 5) & (b["b"] >= 0)))
    np.testing.assert_array_equal(Cut("~(a < 1) & max(a, b) / 2 >= 3").mask(b), [False, True, True])
    np.testing.assert_array_equal(Cut("sqrt(abs(-a * 4)) == 2 * sqrt(a)").mask(b), [True, True, True])
    np.testing.assert_array_equal(Cut("log(exp(a)) != a + 1e-3").mask(b), [True, True, True])
    assert Cut("jet_pt > 500 & abs(jet_eta) < 2").branches == ["jet_eta", "jet_pt"]
    for bad, why in [("a >", "ends too early"), ("__import__('os').system('x')", "unexpected character"),
                     ("open(a) > 1", "unknown function 'open'"), ("min(a) > 1", "takes 2 argument"),
                     ("a > 1 ; b", "unexpected character ';'"), ("(a > 1", "ends too early"),
                     ("a.__class__ > 1", None)]:
        if why is None:  # a dotted name is a branch name (ROOT allows dots), never an attribute
            assert Cut(bad).branches == ["a.__class__"]
            continue
        with pytest.raises(ConfigError, match=why):
            Cut(bad)
    with pytest.raises(ConfigError, match="not a condition"):
        Cut("a + 1").mask(b)


def _audit_doc(folder: Path, files: list[str], **data: object) -> Path:
    config = tiny_audit(folder, {"dauc": {}, "mad": {}})
    text = config.read_text()
    doc_path = folder / "cut.toml"
    keys = ("files", *data)
    lines = [line for line in text.splitlines() if line.split(" =")[0].strip() not in keys]
    out = []
    for line in lines:
        out.append(line)
        if line.strip() == "[data]":
            out.append(f"files = {json.dumps(files)}")
            out += [f"{k} = {json.dumps(v)}" for k, v in data.items()]
    doc_path.write_text("\n".join(out) + "\n")
    return doc_path


def test_cut_equals_a_prefiltered_file(tmp_path: Path) -> None:
    tiny_audit(tmp_path, {"dauc": {}})  # jets.root, model.onnx
    with uproot.open(tmp_path / "jets.root") as f:
        arrays = f["jets"].arrays(library="np")
    keep = (arrays["f0"] > 0.2) & (np.abs(arrays["f1"]) < 1.5) | (arrays["f2"] < -1.8)
    write_jets(tmp_path / "filtered.root", {k: v[keep] for k, v in arrays.items()})
    cut = _audit_doc(tmp_path, ["jets.root"], cut="f0 > 0.2 & abs(f1) < 1.5 | f2 < -1.8", step_size=37)
    pre = _audit_doc(tmp_path / "pre", [str(tmp_path / "filtered.root")], step_size=37)
    a = hepaudit.audit(cut, out=tmp_path / "a")
    b = hepaudit.audit(pre, out=None)
    assert a.data["n_jets"] == b.data["n_jets"] == int(keep.sum())
    assert a.explainers["dauc"].fields["baseline_auc"] == b.explainers["dauc"].fields["baseline_auc"]
    np.testing.assert_allclose([s.score for s in a.explainers["mad"].feature_importance],
                               [s.score for s in b.explainers["mad"].feature_importance], rtol=1e-12)
    with uproot.open(tmp_path / "a" / "per_jet.root") as f:
        entries = f["hepaudit"]["entry"].array(library="np")
    np.testing.assert_array_equal(entries, np.flatnonzero(keep))  # a friend of the input via its entry numbers


def test_max_jets_keeps_both_classes_in_entry_order(tmp_path: Path) -> None:
    """A file sorted by class (signal first): --max-jets 90 takes each class's first jets, in
    proportion to the classes (here 1:2), not 90 signal jets."""
    tiny_audit(tmp_path, {"dauc": {}})
    with uproot.open(tmp_path / "jets.root") as f:
        arrays = f["jets"].arrays(library="np")
    order = np.argsort(-arrays["is_signal"], kind="stable")
    sig = np.flatnonzero(arrays["is_signal"][order] == 1)[:100]
    bkg = np.flatnonzero(arrays["is_signal"][order] == 0)[:200]
    rows = np.sort(np.concatenate([sig, bkg]))
    write_jets(tmp_path / "sorted.root", {k: v[order][rows] for k, v in arrays.items()})
    config = _audit_doc(tmp_path / "s", [str(tmp_path / "sorted.root")], max_jets=90, step_size=40)
    report = hepaudit.audit(config, out=tmp_path / "out")
    assert report.data["n_jets"] == 90
    assert report.explainers["dauc"].status == "ok"
    with uproot.open(tmp_path / "out" / "per_jet.root") as f:
        got = f["hepaudit"].arrays(["entry", "label"], library="np")
    assert int((got["label"] == 1).sum()) == 30 and int((got["label"] == 0).sum()) == 60
    np.testing.assert_array_equal(got["entry"], np.concatenate([np.arange(30), np.arange(100, 160)]))


def test_a_bad_cut_is_a_config_error_before_reading(tmp_path: Path) -> None:
    from conftest import run_cli

    config = _audit_doc(tmp_path, ["jets.root"], cut="f0 > > 1")
    res = run_cli("audit", config, "--out", tmp_path / "o")
    assert res.returncode == 2 and "data: cut:" in res.stderr and "position 6" in res.stderr
    config = _audit_doc(tmp_path, ["jets.root"], cut="no_such_branch > 1")
    res = run_cli("audit", config, "--out", tmp_path / "o2")
    assert res.returncode == 2 and "no branch 'no_such_branch'" in res.stderr
