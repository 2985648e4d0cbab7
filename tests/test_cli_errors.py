"""Bad input gets a clear error and loses nothing (docs/quality.md), through the real CLI.

Each test runs ``hepaudit audit`` as a subprocess on real ROOT files and ONNX models and
checks the exit code (1 = the audit could not run, 2 = bad usage or config), that the
message names the file, branch, ONNX input or key at fault, and that no traceback leaks.
"""

from __future__ import annotations

import hashlib
import json
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
import uproot
from builders import make_flat_jets, nan_model, save, write_jets
from conftest import AuditSetup, run_cli

from hepaudit.audit import audit
from hepaudit.errors import DataError


def assert_clean_error(result, code: int, *needles: str) -> str:
    """Exit code ``code``, every needle in stderr, one short message, no traceback."""
    err = result.stderr
    assert result.returncode == code, (result.returncode, err)
    assert "Traceback" not in err, err
    assert err.startswith("hepaudit: error:"), err
    for needle in needles:
        assert needle in err, (needle, err)
    assert len(err.strip().splitlines()) <= 3, err
    return err


def constituents_doc(setup: AuditSetup, max_particles: int = 10) -> dict:
    """The base config with a constituents model on the jagged part_* branches."""
    from builders import dense_weights, mlp_model

    save(mlp_model(dense_weights([30, 6, 1], seed=9)), setup.dir / "c.onnx")
    doc = setup.doc()
    doc["model"]["path"] = "c.onnx"
    doc["inputs"] = [{"name": "x", "kind": "constituents", "features": ["pt", "eta", "phi"],
                      "momentum": {"px": "part_px", "py": "part_py", "pz": "part_pz",
                                   "energy": "part_energy"},
                      "max_particles": max_particles}]
    return doc


# -- ROOT files -----------------------------------------------------------------------------

def test_missing_root_file(setup: AuditSetup) -> None:
    doc = setup.doc()
    doc["data"]["files"] = ["nowhere.root"]
    assert_clean_error(setup.audit(doc=doc), 2, "nowhere.root", "not found")


def test_truncated_root_file(setup: AuditSetup) -> None:
    data = setup.data.read_bytes()
    (setup.dir / "cut.root").write_bytes(data[: len(data) // 2])
    doc = setup.doc()
    doc["data"]["files"] = ["cut.root"]
    err = assert_clean_error(setup.audit(doc=doc), 2, "cut.root")
    assert "no tree" not in err  # the file is damaged; it does not merely lack the tree


def test_missing_tree_names_close_matches(setup: AuditSetup) -> None:
    doc = setup.doc()
    doc["data"]["tree"] = "jet"
    assert_clean_error(setup.audit(doc=doc), 2, "jets.root", "'jet'", "close matches: jets")


def test_missing_branch_names_close_matches(setup: AuditSetup) -> None:
    doc = constituents_doc(setup)
    doc["inputs"][0]["momentum"]["px"] = "part_pxx"
    assert_clean_error(setup.audit(doc=doc), 2, "jets.root", "'part_pxx'", "close matches: part_px")


def test_missing_flat_branch_names_close_matches(setup: AuditSetup) -> None:
    doc = setup.doc()
    doc["inputs"][0]["branches"] = ["f0", "f1", "f2", "f33"]
    assert_clean_error(setup.audit(doc=doc), 2, "'f33'", "close matches: f3")


@pytest.mark.parametrize("where", ["label", "jet_input"])
def test_jagged_branch_where_flat_expected(setup: AuditSetup, where: str) -> None:
    doc = setup.doc()
    if where == "label":
        doc["data"]["label"] = "part_px"
    else:
        doc["inputs"][0]["branches"] = ["f0", "f1", "f2", "part_px"]
    assert_clean_error(setup.audit(doc=doc), 2, "jets.root", "'part_px'", "jagged")


def _write_with_nonfinite(setup: AuditSetup) -> tuple[Path, int]:
    jets = make_flat_jets(300, 4, seed=11)
    f1 = np.array(jets["f1"])
    bad = [3, 40, 170, 200, 299]  # in three different chunks of 150... and 100 jets
    f1[bad[:3]] = np.nan
    f1[bad[3:]] = [np.inf, -np.inf]
    jets["f1"] = f1
    path = write_jets(setup.dir / "nonfinite.root", jets)
    return path, len(bad)


def test_nonfinite_inputs_fail_with_the_count(setup: AuditSetup) -> None:
    _, n_bad = _write_with_nonfinite(setup)
    doc = setup.doc()
    doc["data"]["files"] = ["nonfinite.root"]
    doc["data"]["step_size"] = 100
    err = assert_clean_error(setup.audit(doc=doc), 1, "nonfinite.root", "NaN", "nonfinite")
    assert f"{n_bad} of 300 jets" in err, err  # the count over the whole sample, not one chunk


def test_nonfinite_inputs_dropped_when_configured(setup: AuditSetup) -> None:
    _, n_bad = _write_with_nonfinite(setup)
    doc = setup.doc()
    doc["data"]["files"] = ["nonfinite.root"]
    doc["data"]["nonfinite"] = "drop"
    doc["data"]["step_size"] = 100
    result = setup.audit(doc=doc)
    assert result.returncode == 0, result.stderr
    report = json.loads((setup.dir / "out" / "report.json").read_text())
    assert report["data"]["n_jets"] == 300 - n_bad
    assert any(f"{n_bad} jets with NaN/inf" in w for w in report["warnings"]), report["warnings"]
    with uproot.open(setup.dir / "out" / "per_jet.root") as f:
        entries = f["hepaudit"]["entry"].array(library="np")
    assert len(entries) == 300 - n_bad
    assert not set(entries) & {3, 40, 170, 200, 299}


def test_max_jets_zero_is_an_empty_selection(setup: AuditSetup) -> None:
    assert_clean_error(setup.audit("--max-jets", "0"), 2, "no jets selected", "jets.root")
    assert not (setup.dir / "out" / "report.json").exists()


def test_empty_tree_is_an_empty_selection(setup: AuditSetup) -> None:
    with uproot.recreate(setup.dir / "empty.root") as f:
        f.mktree("jets", {"f0": np.float32, "f1": np.float32, "f2": np.float32, "f3": np.float32,
                          "is_signal": np.int32})
    doc = setup.doc()
    doc["data"]["files"] = ["empty.root"]
    assert_clean_error(setup.audit(doc=doc), 2, "no jets selected", "empty.root")


def test_label_with_one_class_skips_auc_explainers(setup: AuditSetup) -> None:
    jets = make_flat_jets(200, 4, seed=2)
    jets["is_signal"] = np.ones(200, np.int32)
    write_jets(setup.dir / "allsig.root", jets)
    doc = setup.doc()
    doc["data"]["files"] = ["allsig.root"]
    result = setup.audit(doc=doc)
    assert result.returncode == 0, result.stderr
    report = json.loads((setup.dir / "out" / "report.json").read_text())
    dauc, mad = report["explainers"]["dauc"], report["explainers"]["mad"]
    assert dauc["status"] == "skipped"
    assert "both classes" in dauc["error"] and "200 signal and 0 background" in dauc["error"]
    assert mad["status"] == "ok" and mad["error"] is None
    assert len(mad["feature_importance"]) == 4


def test_label_with_values_other_than_0_and_1(setup: AuditSetup) -> None:
    jets = make_flat_jets(100, 4, seed=2)
    jets["is_signal"] = (np.arange(100) % 3).astype(np.int32)
    write_jets(setup.dir / "three.root", jets)
    doc = setup.doc()
    doc["data"]["files"] = ["three.root"]
    assert_clean_error(setup.audit(doc=doc), 2, "data.label", "is_signal", "[0, 1, 2]")


# -- models ---------------------------------------------------------------------------------

@pytest.mark.parametrize("content", [os.urandom(3000), b"this is a text file, not a model\n" * 20],
                         ids=["random_bytes", "text"])
def test_not_an_onnx_file(setup: AuditSetup, content: bytes) -> None:
    (setup.dir / "bad.onnx").write_bytes(content)
    doc = setup.doc()
    doc["model"]["path"] = "bad.onnx"
    assert_clean_error(setup.audit(doc=doc), 2, "bad.onnx", "ONNX")


def test_missing_model_file(setup: AuditSetup) -> None:
    doc = setup.doc()
    doc["model"]["path"] = "gone.onnx"
    assert_clean_error(setup.audit(doc=doc), 2, "gone.onnx", "not found")


def test_onnx_input_name_does_not_match(setup: AuditSetup) -> None:
    doc = setup.doc()
    doc["inputs"][0]["name"] = "xx"
    assert_clean_error(setup.audit(doc=doc), 2, "'xx'", "close matches: x")


def test_onnx_input_shape_does_not_match(setup: AuditSetup) -> None:
    doc = constituents_doc(setup, max_particles=12)  # 36 values per jet; the model takes 30
    err = assert_clean_error(setup.audit(doc=doc), 2, "c.onnx", "'x'")
    assert "30" in err and "36" in err, err


def test_model_that_returns_nan(setup: AuditSetup) -> None:
    save(nan_model(4), setup.dir / "nan.onnx")  # log(f0) is NaN for the jets with f0 < 0
    doc = setup.doc()
    doc["model"]["path"] = "nan.onnx"
    n_neg = int((np.asarray(setup.jets["f0"]) < 0).sum())
    assert n_neg > 0
    assert_clean_error(setup.audit(doc=doc), 1, "nan.onnx", "NaN", "data.nonfinite")
    doc["data"]["nonfinite"] = "drop"
    result = setup.audit(doc=doc, out="out2")
    assert result.returncode == 0, result.stderr
    report = json.loads((setup.dir / "out2" / "report.json").read_text())
    assert report["data"]["n_jets"] == len(setup.jets["f0"]) - n_neg


# -- explainers -----------------------------------------------------------------------------

def test_unknown_explainer_on_the_command_line(setup: AuditSetup) -> None:
    assert_clean_error(setup.audit("--explainer", "nope"), 2, "'nope'")
    assert_clean_error(setup.audit("--explainer", "dacu"), 2, "'dacu'", "close matches: dauc")


def test_unknown_explainer_table(setup: AuditSetup) -> None:
    doc = setup.doc()
    doc["explainers"]["nope"] = {}
    assert_clean_error(setup.audit(doc=doc), 2, "'nope'")
    doc = setup.doc()
    doc["explainers"]["madd"] = {}
    assert_clean_error(setup.audit(doc=doc), 2, "'madd'", "close matches: mad")


def test_unknown_explainer_option(setup: AuditSetup) -> None:
    doc = setup.doc()
    doc["explainers"]["dauc"] = {"baselin": "mean"}
    assert_clean_error(setup.audit(doc=doc), 2, "explainers.dauc.baselin", "close matches: baseline")


def test_bad_explainer_option_value(setup: AuditSetup) -> None:
    doc = setup.doc()
    doc["explainers"]["mad"] = {"target": "logits"}
    assert_clean_error(setup.audit(doc=doc), 2, "explainers.mad.target", "'logits'")


BOOM_PLUGIN = textwrap.dedent('''
    """A test plugin whose explainer raises in update."""
    import hepaudit
    from hepaudit.explainers.base import Explainer


    class Boom(Explainer):
        name = "boom"
        attribution = True

        def update(self, state, chunk):
            raise RuntimeError("boom went the explainer on purpose")

        def merge(self, a, b):
            return a

        def finish(self, state):
            return self.result()


    @hepaudit.hookimpl
    def hepaudit_register_explainers(register):
        register(Boom)
''')


def test_explainer_that_raises_fails_alone(setup: AuditSetup, monkeypatch: pytest.MonkeyPatch) -> None:
    (setup.dir / "boom_plugin.py").write_text(BOOM_PLUGIN)
    monkeypatch.syspath_prepend(str(setup.dir))
    import importlib

    module = importlib.import_module("boom_plugin")
    doc = setup.doc()
    doc["explainers"]["boom"] = {}
    report = audit(setup.write(doc), out=setup.dir / "out", plugins=[("boom", module)], progress=False)
    assert report.explainers["boom"].status == "failed"
    assert "boom went the explainer on purpose" in report.explainers["boom"].error
    assert report.explainers["dauc"].status == "ok" and report.explainers["mad"].status == "ok"
    written = json.loads((setup.dir / "out" / "report.json").read_text())
    assert written["explainers"]["boom"]["status"] == "failed"
    assert "RuntimeError: boom went the explainer on purpose" in written["explainers"]["boom"]["error"]
    assert written["explainers"]["dauc"]["status"] == "ok"


def test_output_folder_with_a_report_needs_force(setup: AuditSetup) -> None:
    assert setup.audit().returncode == 0
    first = (setup.dir / "out" / "report.json").read_bytes()
    assert_clean_error(setup.audit(), 2, "--force", "out")
    assert (setup.dir / "out" / "report.json").read_bytes() == first  # refused: nothing touched
    again = setup.audit("--force")
    assert again.returncode == 0, again.stderr
    assert json.loads((setup.dir / "out" / "report.json").read_text())["data"]["n_jets"] == 400


# -- config ---------------------------------------------------------------------------------

def test_unknown_config_key(setup: AuditSetup) -> None:
    doc = setup.doc()
    doc["data"]["lable"] = "is_signal"
    assert_clean_error(setup.audit(doc=doc), 2, "data.lable", "close matches: label")
    doc = setup.doc()
    doc["modle"] = {}
    assert_clean_error(setup.audit(doc=doc), 2, "modle", "close matches: model")


def test_wrong_type_in_config(setup: AuditSetup) -> None:
    doc = setup.doc()
    doc["data"]["step_size"] = "big"
    assert_clean_error(setup.audit(doc=doc), 2, "data.step_size", "expected an integer", "found 'big'")


def test_config_file_missing(setup: AuditSetup) -> None:
    result = run_cli("audit", setup.dir / "absent.toml", "--out", setup.dir / "out", cwd=setup.dir)
    assert_clean_error(result, 2, "absent.toml", "not found")


def test_invalid_toml(setup: AuditSetup) -> None:
    (setup.dir / "broken.toml").write_text("[model\npath = 1\n")
    result = run_cli("audit", setup.dir / "broken.toml", "--out", setup.dir / "out", cwd=setup.dir)
    assert_clean_error(result, 2, "broken.toml", "TOML")


def test_debug_shows_the_traceback(setup: AuditSetup) -> None:
    doc = setup.doc()
    doc["data"]["tree"] = "jet"
    result = setup.audit("--debug", doc=doc)
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "DataError" in result.stderr


def test_inputs_are_never_modified(setup: AuditSetup) -> None:
    def digest(path: Path) -> tuple[str, float]:
        return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime

    before = {p: digest(p) for p in (setup.data, setup.model)}
    config = setup.write()
    config_before = digest(config)
    result = run_cli("audit", config, "--out", setup.dir / "out", "-q", cwd=setup.dir)
    assert result.returncode == 0, result.stderr
    assert {p: digest(p) for p in (setup.data, setup.model)} == before
    assert digest(config) == config_before
    assert sorted(p.name for p in setup.dir.iterdir()) == ["audit.toml", "jets.root", "m.onnx", "out"]


def test_python_api_raises_typed_errors(setup: AuditSetup) -> None:
    doc = setup.doc()
    doc["data"]["tree"] = "jet"
    with pytest.raises(DataError, match="close matches: jets"):
        audit(setup.write(doc), out=None)


def test_an_unknown_execution_provider_is_a_config_error(setup: AuditSetup) -> None:
    doc = setup.doc()
    doc["model"]["providers"] = ["CUDAExecutionProvder"]
    assert_clean_error(setup.audit(doc=doc), 2, "model.providers", "CUDAExecutionProvder",
                       "close matches: CUDAExecutionProvider")


def test_a_provider_this_build_lacks_falls_back_to_cpu_with_a_warning(setup: AuditSetup) -> None:
    """CUDA asked for: on a CPU-only onnxruntime the audit runs on CPU, says so, and gives the
    numbers of a CPU audit; where CUDA is there, it is used first."""
    import onnxruntime as ort

    doc = setup.doc()
    doc["model"]["providers"] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    result = setup.audit(doc=doc, out="cuda")
    assert result.returncode == 0, result.stderr
    report = json.loads((setup.dir / "cuda" / "report.json").read_text())
    cpu = json.loads(_cpu_report(setup).read_text())
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert report["model"]["providers"][0] == "CUDAExecutionProvider"
        return
    assert report["model"]["providers"] == ["CPUExecutionProvider"]
    warning = [w for w in report["warnings"] if w.startswith("model.providers")]
    assert warning and "CUDAExecutionProvider not available" in warning[0] and "onnxruntime-gpu" in warning[0]
    assert not [w for w in cpu["warnings"] if w.startswith("model.providers")]
    for name, res in cpu["explainers"].items():
        assert report["explainers"][name]["feature_importance"] == res["feature_importance"]


def _cpu_report(setup: AuditSetup) -> Path:
    result = setup.audit(out="cpu")
    assert result.returncode == 0, result.stderr
    return setup.dir / "cpu" / "report.json"
