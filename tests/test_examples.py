"""Checks of the example data, models and generator under examples/.

Needs only numpy, uproot, awkward and onnxruntime (no torch); the generator test needs
pythia8mc and fastjet and is skipped without them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # the bundled examples end to end: `pytest -m "not slow"` leaves it out

uproot = pytest.importorskip("uproot")
ak = pytest.importorskip("awkward")

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
MODELS = EXAMPLES / "models"
TEST_SAMPLE = EXAMPLES / "data" / "top_qcd_test.root"
SHIFTED_SAMPLE = EXAMPLES / "data" / "shifted_wqcd.root"
BOOSTED_SAMPLE = EXAMPLES / "data" / "boosted_topqcd.root"
MAX_EXAMPLES_BYTES = 10 * 1024 * 1024
MOMENTUM = ("part_px", "part_py", "part_pz", "part_energy")
JET_BRANCHES = {"jet_pt", "jet_eta", "jet_phi", "jet_mass", "jet_nconst", "is_signal"}
PART_BRANCHES = {"part_px", "part_py", "part_pz", "part_energy", "part_pid", "part_charge"}


def mann_whitney_auc(scores, labels) -> float:
    """ROC AUC as the Mann-Whitney U statistic, ties counted half."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_mann_whitney_auc():
    assert mann_whitney_auc([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1]) == 1.0
    assert mann_whitney_auc([0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0]) == 0.0
    assert mann_whitney_auc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=500), rng.integers(0, 2, 500)
    brute = np.mean((s[y == 1][:, None] > s[y == 0][None, :])
                    + 0.5 * (s[y == 1][:, None] == s[y == 0][None, :]))
    assert mann_whitney_auc(s, y) == pytest.approx(brute)


# --- the committed samples ---------------------------------------------------------------

def _read(path):
    with uproot.open(path) as f:
        tree = f["jets"]
        assert tree.classname == "TTree"
        return tree.arrays()


def _check_jets(a, pt_window=(550.0, 650.0)):
    assert JET_BRANCHES | PART_BRANCHES <= set(a.fields)
    assert np.all(a.jet_pt > pt_window[0]) and np.all(a.jet_pt < pt_window[1])
    assert np.all(np.abs(a.jet_eta) < 2.0)
    assert np.all(ak.num(a.part_px, axis=1) == a.jet_nconst)
    pt = np.hypot(a.part_px, a.part_py)
    # pT-ordered constituents (up to float32 rounding of the stored momenta)
    assert ak.all(pt[:, :-1] >= pt[:, 1:] * (1 - 1e-3))
    # the constituents add up to the jet
    jet_px, jet_py = ak.sum(a.part_px, axis=1), ak.sum(a.part_py, axis=1)
    np.testing.assert_allclose(np.hypot(jet_px, jet_py), a.jet_pt, rtol=1e-3)
    assert set(np.unique(a.is_signal)) == {0, 1}


@pytest.mark.parametrize("path,n_per_class,pt_window,signal_mass", [
    (TEST_SAMPLE, 2500, (550.0, 650.0), (140, 210)),  # top mass peak
    (SHIFTED_SAMPLE, 1000, (550.0, 650.0), (65, 100)),  # W mass peak
    (BOOSTED_SAMPLE, 1000, (1000.0, 1200.0), (140, 210)),  # top, twice the pT
])
def test_committed_samples(path, n_per_class, pt_window, signal_mass):
    a = _read(path)
    _check_jets(a, pt_window)
    assert int(np.sum(a.is_signal == 1)) == n_per_class
    assert int(np.sum(a.is_signal == 0)) == n_per_class
    mass = np.asarray(a.jet_mass)
    sig = np.asarray(a.is_signal) == 1
    assert signal_mass[0] < np.median(mass[sig]) < signal_mass[1]


def test_examples_size_under_10mb():
    files = subprocess.run(["git", "ls-files", "-z", "examples"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split("\0")
    files = [f for f in files if f]
    assert any(f.endswith("top_qcd_test.root") for f in files)
    total = sum((REPO / f).stat().st_size for f in files if (REPO / f).exists())
    assert total <= MAX_EXAMPLES_BYTES, f"{total / 1e6:.2f} MB tracked under examples/"


# --- the committed models -----------------------------------------------------------------

ort = pytest.importorskip("onnxruntime")


def _metrics() -> dict:
    return json.loads((MODELS / "metrics.json").read_text())


def _readme_table() -> dict[str, dict[str, float]]:
    """Rows of the metrics table in examples/models/README.md: model -> numbers."""
    text = (MODELS / "README.md").read_text()
    block = text.split("<!-- metrics:begin -->", 1)[1].split("<!-- metrics:end -->", 1)[0]
    rows = {}
    for line in block.splitlines():
        m = re.match(r"\|\s*`([^`]+)`\s*\|(.*)\|\s*$", line)
        if m:
            cells = [c.strip() for c in m.group(2).split("|")]
            rows[m.group(1)] = cells
    return rows


@pytest.fixture(scope="module")
def test_inputs():
    sys.path.insert(0, str(REPO))
    from hepaudit.data.recipes import pfn_arrays, topodnn_arrays

    a = _read(TEST_SAMPLE)
    mom = [a[k] for k in MOMENTUM]
    features, mask = pfn_arrays(*mom, max_particles=60)
    feeds = {"x": topodnn_arrays(*mom, max_particles=30), "features": features, "mask": mask}
    return feeds, np.asarray(a.is_signal)


def _run(path, feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})[0]


def _score(out):
    return out[:, 1] if out.shape[1] == 2 else out[:, 0]


CLASSIFIERS = ["topodnn.onnx", "topodnn_dynamo.onnx", "pfn.onnx",
               *[f"ensemble/topodnn_seed{s}.onnx" for s in range(1, 6)]]


def test_metrics_json_and_readme_agree():
    metrics, table = _metrics(), _readme_table()
    assert set(CLASSIFIERS) <= set(metrics["classifiers"])
    for name, m in metrics["classifiers"].items():
        cells = table[name]
        assert float(cells[0]) == pytest.approx(m["auc"], abs=5e-5)
        assert float(cells[1]) == pytest.approx(m["accuracy"], abs=5e-5)
    ae = metrics["autoencoder"]
    assert float(table[ae["model"]][0]) == pytest.approx(ae["mse_test"], rel=1e-4)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_model_auc_matches_record(name, test_inputs):
    feeds, labels = test_inputs
    path = MODELS / name
    out = _run(path, feeds)
    assert out.shape[0] == len(labels)
    recorded = _metrics()["classifiers"][name]
    assert mann_whitney_auc(_score(out), labels) == pytest.approx(recorded["auc"], abs=0.01)
    acc = np.mean((_score(out) > 0.5) == (labels == 1))
    assert acc == pytest.approx(recorded["accuracy"], abs=0.01)
    if name.startswith("topodnn"):
        assert recorded["auc"] >= 0.93  # the target is 0.95; see examples/models/README.md


@pytest.mark.parametrize("name", [*CLASSIFIERS, "autoencoder.onnx"])
def test_model_sidecar_and_dynamic_batch(name, test_inputs):
    feeds, _ = test_inputs
    path = MODELS / name
    side = json.loads(path.with_suffix(".json").read_text())
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i["name"] for i in side["inputs"]] == [i.name for i in sess.get_inputs()]
    assert [o["name"] for o in side["outputs"]] == [o.name for o in sess.get_outputs()]
    for spec, inp in zip(side["inputs"], sess.get_inputs(), strict=True):
        assert list(inp.shape[1:]) == spec["shape"][1:]
        assert isinstance(inp.shape[0], str) or inp.shape[0] is None  # dynamic batch
        assert spec["meaning"]
    for n in (1, 7):
        out = sess.run(None, {i.name: feeds[i.name][:n] for i in sess.get_inputs()})[0]
        assert out.shape[0] == n


def test_ensemble_members_differ(test_inputs):
    feeds, _ = test_inputs
    scores = np.stack([_score(_run(MODELS / n, feeds)) for n in CLASSIFIERS
                       if n.startswith("ensemble/")])
    assert scores.shape[0] == 5
    assert np.mean(np.std(scores, axis=0)) > 1e-3


def test_autoencoder_mse_matches_record(test_inputs):
    feeds, _ = test_inputs
    x = feeds["x"]
    rec = _run(MODELS / "autoencoder.onnx", {"x": x})
    assert rec.shape == x.shape
    mse = float(np.mean((rec - x) ** 2))
    recorded = _metrics()["autoencoder"]["mse_test"]
    assert mse == pytest.approx(recorded, rel=0.10)
    # it learned something: clearly better than predicting the mean input (the 8-number
    # bottleneck leaves ~58% of the total variance of the 90 inputs unexplained)
    assert mse < 0.8 * float(np.mean((x - x.mean(axis=0)) ** 2))


# --- the generator ------------------------------------------------------------------------

def test_generator_small_run(tmp_path):
    pytest.importorskip("pythia8mc")
    pytest.importorskip("fastjet")
    out = tmp_path / "jets.root"
    cmd = [sys.executable, str(EXAMPLES / "generate_jets.py"), "--out", str(out),
           "--n-jets", "40", "--seed", "4242", "--workers", "2", "--chunk-size", "20",
           "--no-progress"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    a = _read(out)
    _check_jets(a)
    sig = np.asarray(a.is_signal) == 1
    assert sig.sum() == 40 and (~sig).sum() == 40
    mass = np.asarray(a.jet_mass)
    assert 140 < np.median(mass[sig]) < 210
    assert np.median(mass[~sig]) < 120
    assert set(np.abs(np.unique(ak.flatten(a.part_charge)))) <= {0, 1, 2}

    # reproducible, whatever the number of workers
    out1 = tmp_path / "jets_1worker.root"
    subprocess.run([*cmd[:2], "--out", str(out1), "--n-jets", "40", "--seed", "4242",
                    "--workers", "1", "--chunk-size", "20", "--no-progress"],
                   check=True, capture_output=True, timeout=300)
    b = _read(out1)
    for k in ("jet_pt", "jet_mass", "part_px", "part_pid"):
        assert ak.all(ak.flatten(a[k], axis=None) == ak.flatten(b[k], axis=None))


def test_ood_demo_flags_the_boosted_sample(tmp_path):
    """The OOD demo (examples/audit_ood.toml) through the CLI: the jets at twice the training
    pT are flagged by ood_ae far above the nominal 5%, the held-out reference is not (within
    its binomial error), and the demo's gates fail the run with exit code 1."""
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "hepaudit", "audit", str(EXAMPLES / "audit_ood.toml"),
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr
    assert "gate failed: ood_ae.flagged_fraction" in done.stderr
    report = json.loads((out / "report.json").read_text())
    ae = report["explainers"]["ood_ae"]
    assert ae["status"] == "ok"
    assert ae["flagged_fraction"] > 0.5 and ae["auroc"] > 0.9
    expected = ae["expected_reference_flagged_fraction"]
    assert abs(ae["reference_flagged_fraction"] - expected) < 3 * ae["reference_flagged_fraction_error"]
    ens = report["explainers"]["ood_ensemble"]
    assert abs(ens["reference_flagged_fraction"] - expected) < 3 * ens["reference_flagged_fraction_error"]
    # the verdict: the failed gates first, the shift named beyond its noise, calibration judged
    findings = report["findings"]
    assert [f["kind"] for f in findings[:2]] == ["gates", "gates"] and findings[0]["level"] == "alert"
    shifted = [f for f in findings if f["kind"] == "ood"]
    assert {f["numbers"]["explainer"] for f in shifted} == {"ood_ae", "ood_ensemble"}
    ae_finding = next(f for f in shifted if f["numbers"]["explainer"] == "ood_ae")
    assert ae_finding["level"] == "warning" and "beyond noise" in ae_finding["text"]
    calibration = next(f for f in findings if f["kind"] == "calibration")
    assert calibration["numbers"]["ece"] == report["explainers"]["calibration"]["ece"]
    assert calibration["numbers"]["calibrated_ece"] > 0
    assert "findings:" in done.stderr and "ALERT" in done.stderr
