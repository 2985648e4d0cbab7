"""hepaudit from Python, as in a notebook (contract §5 "From Python", issue 23): a dict config,
the per-jet results in memory, a compact notebook view, report warnings as Python warnings;
the same numbers as the CLI on the same config."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import uproot
from conftest import AuditSetup, run_cli

import hepaudit
from hepaudit.errors import ConfigError, HepauditWarning


def _doc(setup: AuditSetup) -> dict:
    doc = setup.doc()
    doc["explainers"] = {"dauc": {}, "mad": {}, "lrp": {}}
    doc["execution"] = {"progress": False}
    return doc


def test_dict_config_in_memory_per_jet_matches_the_cli(setup: AuditSetup, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = _doc(setup)
    done = run_cli("audit", setup.write(doc), "--out", setup.dir / "cli", "-q", cwd=setup.dir)
    assert done.returncode == 0, done.stderr
    on_disk = json.loads((setup.dir / "cli" / "report.json").read_text())
    monkeypatch.chdir(setup.dir)  # a dict's relative paths start from the current folder
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        report = hepaudit.audit(doc, out=None)
    # the jets as a coffea processor holds them: an awkward Array instead of data.files
    events = uproot.open(setup.data)["jets"].arrays()
    no_files = {**doc, "data": {k: v for k, v in doc["data"].items() if k != "files"}}
    from_arrays = hepaudit.audit(no_files, arrays=events, out=None, warn=False)
    for ran in (report, from_arrays):
        assert ran.data["n_jets"] == on_disk["data"]["n_jets"]
        for name in ("dauc", "mad", "lrp"):
            ours = [(s.feature, s.score) for s in ran.explainers[name].feature_importance]
            theirs = [(s["feature"], s["score"]) for s in on_disk["explainers"][name]["feature_importance"]]
            assert [f for f, _ in ours] == [f for f, _ in theirs], name
            np.testing.assert_allclose([v for _, v in ours], [v for _, v in theirs], rtol=1e-12, err_msg=name)
        assert ran.explainers["dauc"].fields["baseline_auc"] == on_disk["explainers"]["dauc"]["baseline_auc"]
    # per-jet results in memory: the CLI's per_jet.root, column for column; nothing written
    tree = uproot.open(setup.dir / "cli" / "per_jet.root")["hepaudit"].arrays(library="np")
    assert set(report.per_jet) >= set(tree) and report.per_jet_file is None
    for column, values in tree.items():
        np.testing.assert_allclose(report.per_jet[column], values, rtol=1e-6, err_msg=column)
    assert report.to_dict()["per_jet"] is None
    # with out set, report.per_jet reads the file written
    written = hepaudit.audit(doc, out=setup.dir / "py", warn=False)
    np.testing.assert_array_equal(written.per_jet["score"], tree["score"])


def test_notebook_view_and_repr_are_short(setup: AuditSetup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(setup.dir)
    report = hepaudit.audit(_doc(setup), out=None, warn=False)
    html = report._repr_html_()
    assert len(html) < 8000 and "<table>" in html and "dauc" in html and "lrp" in html
    assert f"AUC {report.explainers['dauc'].fields['baseline_auc']:.4f}" in html
    assert len(repr(report)) < 200 and "3 of 3 explainers ok" in repr(report)


def test_report_warnings_are_python_warnings(setup: AuditSetup, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = _doc(setup)
    doc["explainers"] = {"ood_ae": {}}  # no [reference]: the audited data is its own, with a warning
    monkeypatch.chdir(setup.dir)
    with pytest.warns(HepauditWarning, match="no reference sample"):
        report = hepaudit.audit(doc, out=None)
    assert any("no reference sample" in w for w in report.warnings)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warn=False: none raised
        hepaudit.audit(doc, out=None, warn=False)


def test_bad_dict_and_bad_type_are_config_errors(setup: AuditSetup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(setup.dir)
    doc = _doc(setup)
    doc["data"]["stepsize"] = 10
    with pytest.raises(ConfigError, match="step_size"):
        hepaudit.audit(doc, out=None)
    with pytest.raises(ConfigError, match="expected a path, a dict"):
        hepaudit.audit(42, out=None)  # type: ignore[arg-type]
    assert not Path("hepaudit-report").exists()


def test_arrays_in_memory_give_the_files_numbers(setup: AuditSetup, monkeypatch: pytest.MonkeyPatch) -> None:
    """arrays= (a coffea processor's jets): an awkward Array or a dict of arrays instead of
    data.files, the same numbers and per-jet results as reading the file; cut and max_jets apply."""
    monkeypatch.chdir(setup.dir)
    doc = _doc(setup)
    from_file = hepaudit.audit(doc, out=None, warn=False)
    events = uproot.open(setup.data)["jets"].arrays()  # every branch, as an awkward Array
    no_files = {**doc, "data": {k: v for k, v in doc["data"].items() if k != "files"}}
    for arrays in (events, {name: events[name] for name in events.fields}):
        report = hepaudit.audit(no_files, out=None, warn=False, arrays=arrays)
        assert report.data["files"] == [{"path": "<arrays>", "entries": len(events)}]
        for name in ("dauc", "mad", "lrp"):
            np.testing.assert_allclose([s.score for s in report.explainers[name].feature_importance],
                                       [s.score for s in from_file.explainers[name].feature_importance], rtol=1e-12)
        np.testing.assert_array_equal(report.per_jet["score"], from_file.per_jet["score"])
    cut = {**no_files, "data": {**no_files["data"], "cut": "f0 > 0", "max_jets": 50}}
    chosen = hepaudit.audit(cut, out=None, warn=False, arrays=events)
    kept = chosen.per_jet["entry"]
    assert len(kept) == 50 and np.all(np.asarray(events["f0"])[kept] > 0)
    with pytest.raises(hepaudit.errors.DataError, match="arrays: no branch 'f3'"):
        hepaudit.audit(no_files, out=None, arrays={k: events[k] for k in events.fields if k != "f3"})
    with pytest.raises(hepaudit.errors.DataError, match="'f0' is jagged"):
        hepaudit.audit(no_files, out=None, arrays={**{k: events[k] for k in events.fields}, "f0": events["part_px"]})
    with pytest.raises(ConfigError, match="local executor"):
        hepaudit.audit(no_files, out=None, arrays=events, executor="dask")


def test_per_jet_inputs_are_written_when_asked(setup: AuditSetup, monkeypatch: pytest.MonkeyPatch) -> None:
    """[per_jet] inputs = true: the model's inputs per jet beside the attributions (a waterfall's
    feature values), named like them; off by default."""
    monkeypatch.chdir(setup.dir)
    doc = _doc(setup)
    plain = hepaudit.audit(doc, out=None, warn=False)
    assert not any(k.startswith("input_") for k in plain.per_jet)
    doc["per_jet"] = {"inputs": True}
    report = hepaudit.audit(doc, out=setup.dir / "with_inputs", warn=False)
    tree = uproot.open(setup.dir / "with_inputs" / "per_jet.root")["hepaudit"].arrays(library="np")
    jets = uproot.open(setup.data)["jets"].arrays(["f0", "f1", "f2", "f3"], library="np")
    for name in ("f0", "f1", "f2", "f3"):  # jet-level inputs, as the model saw them (no preprocessing here)
        np.testing.assert_allclose(tree[f"input_{name}"], jets[name][tree["entry"]], rtol=1e-6)
    np.testing.assert_array_equal(report.per_jet["input_f2"], tree["input_f2"])
    with pytest.raises(ConfigError, match="per_jet"):
        hepaudit.audit({**doc, "per_jet": {"input": True}}, out=None)


def test_shap_waterfall_of_one_jet(setup: AuditSetup, monkeypatch: pytest.MonkeyPatch) -> None:
    """report.explainers["shap"].explanation.waterfall(...): the base value plus the bars reach
    the jet's f(x) (SHAP's efficiency), the largest contributions first, by row or by entry."""
    monkeypatch.chdir(setup.dir)
    doc = _doc(setup)
    doc["explainers"] = {"shap": {"jets": 5}}
    explanation = hepaudit.audit(doc, out=None, warn=False).explainers["shap"].explanation
    fig = explanation.waterfall(0, top=2)
    ax = fig.axes[0]
    bars = [p for p in ax.patches]
    assert len(bars) == 3  # two features and "2 other features" (4 players)
    phi, base = explanation.values[0], explanation.base_values[0]
    end = bars[-1].get_x() + bars[-1].get_width()
    assert end == pytest.approx(base + phi.sum(), abs=1e-6)
    assert abs(bars[0].get_width()) == pytest.approx(np.abs(phi).max())
    labels = [t.get_text() for t in ax.get_yticklabels()]
    k = int(np.argmax(np.abs(phi)))
    assert labels[0].startswith(explanation.feature_names[k] + " = ")
    again = explanation.waterfall(entry=int(explanation.entries[0]), top=2)
    assert [p.get_width() for p in again.axes[0].patches] == [p.get_width() for p in bars]
    with pytest.raises(ValueError, match="not among"):
        explanation.waterfall(entry=-5)


def test_report_style_and_vector_figures(setup: AuditSetup, monkeypatch: pytest.MonkeyPatch) -> None:
    """[report] figure_formats adds PDF and SVG beside each PNG; style picks mplhep's experiment
    style for the report's figures only (the caller's matplotlib settings are left as they were)."""
    import matplotlib

    monkeypatch.chdir(setup.dir)
    doc = _doc(setup)
    doc["report"] = {"figure_formats": ["png", "pdf", "svg"]}
    before = dict(matplotlib.rcParams)
    hepaudit.audit(doc, out=setup.dir / "vector", warn=False)
    assert dict(matplotlib.rcParams) == before
    figures = setup.dir / "vector" / "figures"
    stems = {fmt: sorted(p.stem for p in figures.glob(f"*.{fmt}")) for fmt in ("png", "pdf", "svg")}
    pngs = stems["png"]
    assert pngs and pngs == stems["pdf"] == stems["svg"]
    assert (figures / f"{pngs[0]}.pdf").read_bytes().startswith(b"%PDF")
    assert b"<svg" in (figures / f"{pngs[0]}.svg").read_bytes()[:2000]
    doc["report"] = {"style": "matplotlib"}
    hepaudit.audit(doc, out=setup.dir / "plain", warn=False)
    name = "dauc_importance.png"
    assert (setup.dir / "plain" / "figures" / name).read_bytes() != (figures / name).read_bytes()
    assert not list((setup.dir / "plain" / "figures").glob("*.pdf"))
    with pytest.raises(ConfigError, match="report.figure_formats"):
        hepaudit.audit({**doc, "report": {"figure_formats": ["jpg"]}}, out=None)
    # [report] dpi: the PNGs at twice the resolution have twice the pixels on each side
    import matplotlib.image

    doc["report"] = {"style": "matplotlib", "dpi": 200}
    hepaudit.audit(doc, out=setup.dir / "dpi200", warn=False)
    small = matplotlib.image.imread(setup.dir / "plain" / "figures" / name).shape
    large = matplotlib.image.imread(setup.dir / "dpi200" / "figures" / name).shape
    assert abs(large[0] - 2 * small[0]) <= 4 and abs(large[1] - 2 * small[1]) <= 4
    with pytest.raises(ConfigError, match="dpi"):
        hepaudit.audit({**doc, "report": {"dpi": 5000}}, out=None)
