"""Bad input that used to give silently wrong numbers, now refused or handled, through the real CLI.

Each case runs ``hepaudit`` in a subprocess on real ROOT files and ONNX models and checks
the exit code, the message and what is left on disk (issue 17, family "no silent wrong
numbers"; the rest of that campaign is still to come).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).parent))

from builders import dense_weights, make_flat_jets, mlp_model, save, write_jets  # noqa: E402
from conftest import FEATURES, AuditSetup, run_cli  # noqa: E402
from test_cli_errors import assert_clean_error  # noqa: E402


def with_jets(setup: AuditSetup, name: str, **changes: np.ndarray) -> dict:
    """The base config reading ``name``: the setup's flat jets with some branches replaced."""
    jets = make_flat_jets(len(setup.jets["is_signal"]), len(FEATURES), seed=4)
    jets.update(changes)
    write_jets(setup.dir / name, jets)
    doc = setup.doc()
    doc["data"]["files"] = [name]
    return doc


@pytest.mark.parametrize("value,shown", [(0.5, "0.5"), (np.nan, "nan"), (-1.0, "-1")])
def test_labels_must_be_exactly_0_or_1(setup: AuditSetup, value: float, shown: str) -> None:
    labels = (np.arange(400) % 2).astype(np.float64)
    labels[7] = value  # once: it used to be counted as background (0.5 -> 0) or crash
    doc = with_jets(setup, "labels.root", is_signal=labels)
    assert_clean_error(setup.audit(doc=doc), 2, "data.label", "'is_signal'", "exactly 0", shown)
    assert not (setup.dir / "out").exists()  # refused before the output folder is touched


def test_nan_weights_fail_naming_the_branch(setup: AuditSetup) -> None:
    weights = np.ones(400)
    weights[[3, 50]] = [np.nan, np.inf]
    doc = with_jets(setup, "weights.root", weight=weights)
    doc["data"]["weight"] = "weight"
    err = assert_clean_error(setup.audit(doc=doc), 1, "'weight'", "data.weight", "NaN or inf",
                             "first at entry 3", "nonfinite")
    assert "2 of" in err
    assert not (setup.dir / "out" / "report.json").exists()


def test_nan_weights_dropped_with_the_policy(setup: AuditSetup) -> None:
    weights = np.ones(400)
    weights[[3, 50, 399]] = np.nan
    doc = with_jets(setup, "weights.root", weight=weights)
    doc["data"].update(weight="weight", nonfinite="drop")
    out = setup.audit(doc=doc)
    assert out.returncode == 0, out.stderr
    report = json.loads((setup.dir / "out" / "report.json").read_text())
    assert report["data"]["n_jets"] == 397
    assert any("3 jets with NaN/inf inputs, weights or scores" in w for w in report["warnings"])
    import uproot

    with uproot.open(setup.dir / "out" / "per_jet.root") as handle:
        entries = handle["hepaudit"]["entry"].array(library="np")
    assert not {3, 50, 399} & set(entries.tolist()) and len(entries) == 397


def test_every_jet_dropped_is_an_error(setup: AuditSetup) -> None:
    doc = with_jets(setup, "allnan.root", f0=np.full(400, np.nan, np.float32))
    doc["data"]["nonfinite"] = "drop"
    assert_clean_error(setup.audit(doc=doc), 1, "no jet is left to audit", "400")
    out = setup.dir / "out"
    assert not (out / "report.json").exists() and not list(out.glob("*.root*"))  # nothing half-written


def test_duplicate_features_are_refused(setup: AuditSetup) -> None:
    doc = setup.doc()
    doc["inputs"][0]["branches"] = ["f0", "f1", "f1", "f3"]
    assert_clean_error(setup.audit(doc=doc), 2, "feature 'f1' appears twice")


def int_input_model(path: Path, n: int) -> Path:
    """An MLP whose input is int64 (as some exporters write counts and ids), cast to float inside."""
    inner = mlp_model(dense_weights([n, 6, 1], seed=2), "gemm")
    graph = inner.graph
    cast = helper.make_node("Cast", ["x_int"], ["x"], to=TensorProto.FLOAT)
    new = helper.make_graph([cast, *graph.node], "int_mlp",
                            [helper.make_tensor_value_info("x_int", TensorProto.INT64, ["N", n])],
                            list(graph.output), list(graph.initializer))
    model = helper.make_model(new, opset_imports=list(inner.opset_import))
    onnx.checker.check_model(model)
    return save(model, path)


def test_integer_model_input_refuses_fractions(setup: AuditSetup) -> None:
    int_input_model(setup.dir / "int.onnx", len(FEATURES))
    doc = setup.doc()
    doc["model"]["path"] = "int.onnx"
    doc["inputs"][0]["name"] = "x_int"
    assert_clean_error(setup.audit(doc=doc), 1, "model input 'x_int'", "int64", "not whole numbers")


def test_integer_model_input_takes_whole_numbers(setup: AuditSetup) -> None:
    int_input_model(setup.dir / "int.onnx", len(FEATURES))
    counts = {f"f{k}": np.random.default_rng(k).integers(0, 20, 400).astype(np.float32) for k in range(4)}
    doc = with_jets(setup, "counts.root", **counts)
    doc["model"]["path"] = "int.onnx"
    doc["inputs"][0]["name"] = "x_int"
    doc["explainers"] = {"mad": {}, "dauc": {"baseline": 0}}  # x̄ is not whole; 0 is
    out = setup.audit(doc=doc)
    assert out.returncode == 0, out.stderr
    report = json.loads((setup.dir / "out" / "report.json").read_text())
    mad, dauc = report["explainers"]["mad"], report["explainers"]["dauc"]
    assert mad["status"] == "failed" and "input 'x_int' is int64" in mad["error"] and "whole number" in mad["error"]
    assert dauc["status"] == "ok" and len(dauc["feature_importance"]) == 4


def test_root_file_shorter_than_its_header_says(setup: AuditSetup) -> None:
    data = setup.data.read_bytes()
    (setup.dir / "short.root").write_bytes(data[:-300])  # opens, lists its keys, but baskets are gone
    doc = setup.doc()
    doc["data"]["files"] = ["short.root"]
    assert_clean_error(setup.audit(doc=doc), 2, "short.root", "truncated", "header says")
    inspected = run_cli("inspect", setup.dir / "short.root")
    assert_clean_error(inspected, 2, "short.root", "truncated")


def test_constituent_branches_of_unequal_lengths(setup: AuditSetup) -> None:
    import awkward as ak

    jets = dict(setup.jets)
    py = ak.to_list(jets["part_py"])
    py[5] = py[5][:-1]  # one constituent short in jet 5
    jets["part_py"] = ak.Array(py)
    write_jets(setup.dir / "uneven.root", jets)
    from test_cli_errors import constituents_doc

    doc = constituents_doc(setup)
    doc["data"]["files"] = ["uneven.root"]
    assert_clean_error(setup.audit(doc=doc), 1, "px and py branches", "different numbers of constituents")


def test_onnxruntime_failing_inside_the_model_names_the_model(setup: AuditSetup) -> None:
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["z"]), helper.make_node("Sigmoid", ["z"], ["score"])], "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor("shape", TensorProto.INT64, [2], [7, 1])])  # fits 7 jets only
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), setup.dir / "reshape.onnx")
    doc = setup.doc()
    doc["model"]["path"] = "reshape.onnx"
    err = assert_clean_error(setup.audit(doc=doc), 1, "reshape.onnx", "onnxruntime failed to run the model",
                             "Reshape")
    assert "[E:onnxruntime" not in err  # onnxruntime's own log line is not repeated
