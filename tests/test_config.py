"""Config validation (docs/contract.md section 2) and ``[gates]`` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builders import toml_dumps
from conftest import AuditSetup

from hepaudit.config import ClassSumScore, load_config
from hepaudit.errors import ConfigError


def base_doc() -> dict:
    return {
        "model": {"path": "models/m.onnx"},
        "data": {"files": ["data/a.root", "data/b_*.root"], "label": "is_signal"},
        "inputs": [{"name": "x", "kind": "jet", "branches": ["f0", "f1"]}],
        "explainers": {"dauc": {}},
    }


def write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "cfg" / "audit.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(toml_dumps(doc))
    return path


def test_paths_are_relative_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # not the config's folder
    cfg = load_config(write(tmp_path, base_doc()))
    folder = tmp_path / "cfg"
    assert Path(cfg.model.path) == folder / "models" / "m.onnx"
    assert [Path(f) for f in cfg.data.files] == [folder / "data" / "a.root", folder / "data" / "b_*.root"]
    assert cfg.data.tree == "jets" and cfg.data.step_size == 100_000 and cfg.data.nonfinite == "fail"
    assert cfg.inputs[0].branches == ("f0", "f1")


def test_absolute_paths_stay(tmp_path: Path) -> None:
    doc = base_doc()
    doc["model"]["path"] = str(tmp_path / "abs.onnx")
    assert load_config(write(tmp_path, doc)).model.path == str(tmp_path / "abs.onnx")


@pytest.mark.parametrize(
    "where, key, close",
    [
        (("model",), "pth", "path"),
        (("data",), "step", "step_size"),
        (("inputs", 0), "brnaches", "branches"),
        (("inputs", 0), "kindd", "kind"),
        ((), "refrence", "reference"),
        (("execution",), "sed", "seed"),
    ],
)
def test_unknown_keys_at_every_level(tmp_path: Path, where: tuple, key: str, close: str) -> None:
    doc = base_doc()
    doc.setdefault("execution", {})
    table = doc
    for part in where:
        table = table[part]
    table[key] = 1
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, doc))
    message = str(info.value)
    assert key in message and f"close matches: {close}" in message, message
    assert "audit.toml" in message


def test_unknown_key_in_momentum_and_reference(tmp_path: Path) -> None:
    doc = base_doc()
    doc["inputs"] = [
        {
            "name": "x",
            "kind": "constituents",
            "max_particles": 3,
            "features": ["pt"],
            "momentum": {"px": "a", "py": "b", "pz": "c", "enrgy": "d"},
        }
    ]
    with pytest.raises(ConfigError, match=r"inputs\[0\]\.momentum\.enrgy.*close matches: energy"):
        load_config(write(tmp_path, doc))
    doc = base_doc()
    doc["reference"] = {"files": ["r.root"], "tre": "jets"}
    with pytest.raises(ConfigError, match=r"reference\.tre.*close matches: tree"):
        load_config(write(tmp_path, doc))


@pytest.mark.parametrize(
    "where, key, value, expected",
    [
        ("data", "step_size", "big", "expected an integer, found 'big'"),
        ("data", "step_size", 1.5, "expected an integer, found 1.5"),
        ("data", "files", "a.root", "expected a list of a string, found 'a.root'"),
        ("data", "nonfinite", "skip", "expected 'fail' or 'drop', found 'skip'"),
        ("model", "batch_size", True, "expected an integer, found True"),
        ("model", "path", 3, "expected a string, found 3"),
    ],
)
def test_wrong_types_name_the_key(tmp_path: Path, where: str, key: str, value, expected: str) -> None:
    doc = base_doc()
    doc[where][key] = value
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, doc))
    assert f"{where}.{key}" in str(info.value) and expected in str(info.value), str(info.value)


def test_range_and_consistency_checks(tmp_path: Path) -> None:
    for section, key, value, needle in [
        ("data", "step_size", 0, "step_size"),
        ("data", "max_jets", -1, "max_jets"),
        ("model", "batch_size", 0, "batch_size"),
    ]:
        doc = base_doc()
        doc[section][key] = value
        with pytest.raises(ConfigError, match=needle):
            load_config(write(tmp_path, doc))
    doc = base_doc()
    doc["inputs"] = [{"name": "x", "kind": "jet"}]
    with pytest.raises(ConfigError, match="needs branches"):
        load_config(write(tmp_path, doc))
    doc["inputs"] = [
        {
            "name": "x",
            "kind": "constituents",
            "features": ["pt"],
            "max_particles": 3,
            "momentum": {"px": "a", "py": "b", "pz": "c", "pt": "d"},
        }
    ]
    with pytest.raises(ConfigError, match="momentum"):
        load_config(write(tmp_path, doc))
    doc["inputs"] = [
        {"name": "x", "kind": "jet", "branches": ["a"]},
        {"name": "x", "kind": "jet", "branches": ["b"]},
    ]
    with pytest.raises(ConfigError, match="configured twice"):
        load_config(write(tmp_path, doc))
    del doc["inputs"]
    with pytest.raises(ConfigError, match=r"\[\[inputs\]\]"):
        load_config(write(tmp_path, doc))


def test_score_forms(tmp_path: Path) -> None:
    doc = base_doc()
    doc["model"]["score"] = 2
    assert load_config(write(tmp_path, doc)).model.score == 2
    doc["model"]["classes"] = ["Tbqq", "Tbq", "QCD"]
    doc["model"]["score"] = {"signal": ["Tbqq", "Tbq"], "background": ["QCD"]}
    score = load_config(write(tmp_path, doc)).model.score
    assert score == ClassSumScore(("Tbqq", "Tbq"), ("QCD",))
    assert load_config(write(tmp_path, doc)).model.classes == ("Tbqq", "Tbq", "QCD")
    doc["model"]["score"] = {"signal": [0, 1], "background": [2]}
    assert load_config(write(tmp_path, doc)).model.score == ClassSumScore((0, 1), (2,))
    doc["model"]["score"] = {"signal": ["Tbqq"], "background": []}
    with pytest.raises(ConfigError, match="model.score"):
        load_config(write(tmp_path, doc))
    doc["model"]["score"] = {"signal": ["Tbqq"], "bkg": ["QCD"]}
    with pytest.raises(ConfigError, match="model.score"):
        load_config(write(tmp_path, doc))
    doc["model"]["score"] = "Tbqq"  # a column by its class name
    assert load_config(write(tmp_path, doc)).model.score == "Tbqq"
    doc["model"]["score"] = "Hbb"
    with pytest.raises(ConfigError, match="model: score: 'Hbb' is not one of the classes"):
        load_config(write(tmp_path, doc))


def test_gate_tables_are_validated(tmp_path: Path) -> None:
    doc = base_doc()
    doc["gates"] = {"dauc.baseline_auc": {"min": 0.9}, "data.n_jets": {"min": 10, "max": 1e6}}
    gates = load_config(write(tmp_path, doc)).gates
    assert gates["dauc.baseline_auc"].min == 0.9 and gates["data.n_jets"].max == 1e6
    doc["gates"] = {"dauc.baseline_auc": {}}
    with pytest.raises(ConfigError, match="min or max"):
        load_config(write(tmp_path, doc))
    doc["gates"] = {"dauc.baseline_auc": {"minimum": 0.9}}
    with pytest.raises(ConfigError, match=r"gates\.dauc\.baseline_auc\.minimum.*close matches: min"):
        load_config(write(tmp_path, doc))
    doc["gates"] = {"dauc.baseline_auc": 0.9}
    with pytest.raises(ConfigError, match="gates.dauc.baseline_auc"):
        load_config(write(tmp_path, doc))


# -- gates through the CLI ------------------------------------------------------------------


def test_failing_gate_exits_1_after_writing_the_report(setup: AuditSetup) -> None:
    doc = setup.doc()
    doc["gates"] = {"dauc.baseline_auc": {"min": 0.99}}
    result = setup.audit(doc=doc)
    assert result.returncode == 1, result.stderr
    assert (
        "gate failed" in result.stderr
        and "dauc.baseline_auc" in result.stderr
        and "min 0.99" in result.stderr
    )
    report = json.loads((setup.dir / "out" / "report.json").read_text())
    assert report["explainers"]["dauc"]["status"] == "ok"
    assert (setup.dir / "out" / "report.html").exists()


def test_passing_gate_exits_0(setup: AuditSetup) -> None:
    doc = setup.doc()
    doc["gates"] = {"dauc.baseline_auc": {"min": 0.5}, "data.n_jets": {"min": 400, "max": 400}}
    result = setup.audit(doc=doc)
    assert result.returncode == 0, result.stderr
    assert "gate failed" not in result.stderr


def test_gate_on_a_missing_path_fails_with_a_message(setup: AuditSetup) -> None:
    doc = setup.doc()
    doc["gates"] = {"dauc.baseline_acu": {"min": 0.5}}
    result = setup.audit(doc=doc)
    assert result.returncode == 1
    assert "dauc.baseline_acu" in result.stderr and "not in the report" in result.stderr
    assert "Traceback" not in result.stderr
