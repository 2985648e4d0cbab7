"""The bad-input campaign: what a new or a hostile user can get wrong, each case through the real CLI.

Every case runs ``hepaudit`` in a subprocess on real files (ROOT written by uproot, ONNX by
onnx.helper) and checks the exit code (2: what the user wrote or pointed at, found before
any jet is read; 1: failures while running), that the message is one to three lines naming
what is at fault, without a traceback, and what is left on disk: no report unless the run
succeeded, no staging folder, the inputs untouched. Families (the ids' prefixes):

config-shape, config-type, config-key, path, tree, numbers, output, usage, inspect.

Marked ``slow`` (about two minutes): ``pytest -m "not slow"`` leaves it out, CI runs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from builders import dense_weights, make_flat_jets, make_jets, mlp_model, save, toml_dumps, write_jets  # noqa: E402

pytestmark = pytest.mark.slow

N = 240
BASE: dict = {
    "model": {"path": "m.onnx"},
    "data": {"files": ["jets.root"], "tree": "jets", "label": "is_signal", "step_size": 100},
    "inputs": [{"name": "x", "kind": "jet", "branches": ["f0", "f1", "f2", "f3"]}],
    "explainers": {"dauc": {}},
    "execution": {"progress": False},
}


@dataclass
class Case:
    id: str
    code: int
    needles: tuple[str, ...]
    doc: Callable[[dict], object] | None = None  # changes the config (in place, or returns TOML text)
    args: tuple[str, ...] = ()  # extra CLI arguments
    command: tuple[str, ...] = ()  # a whole command instead of an audit
    files: dict[str, bytes | Callable[[Path], None]] = field(default_factory=dict)  # written first


def put(path: str, value: object) -> Callable[[dict], None]:
    """Set a dotted path (``data.tree``, ``inputs.0.name``) in the config."""
    keys = path.split(".")

    def change(doc: dict) -> None:
        node: object = doc
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})  # type: ignore[index]
        last = keys[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value  # type: ignore[index]

    return change


def drop(path: str) -> Callable[[dict], None]:
    keys = path.split(".")

    def change(doc: dict) -> None:
        node = doc
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]

    return change


def raw(text: str) -> Callable[[dict], str]:
    return lambda doc: text


def jets_with(**changes: object) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        jets = make_flat_jets(N, 4, seed=4)
        jets.update(make_jets(N, seed=5, max_const=6))
        jets.update(changes)
        write_jets(path, jets)
    return write


def no_outputs_model(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "no_outputs",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])], [])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


CASES: list[Case] = []

# -- config-shape: a table of the wrong shape ---------------------------------------------------
for table in ("model", "data", "execution", "reference"):
    for value in ("a string", 3, [1, 2]):
        CASES.append(Case(f"config-shape-{table}-{type(value).__name__}", 2, (table, "expected a table"),
                          doc=put(table, value)))
for value in ("x", 5, {"name": "x"}):
    CASES.append(Case(f"config-shape-inputs-{type(value).__name__}", 2, ("inputs",), doc=put("inputs", value)))
for value in ("dauc", 3, ["dauc"]):
    CASES.append(Case(f"config-shape-explainers-{type(value).__name__}", 2, ("explainers",),
                      doc=put("explainers", value)))
CASES += [
    Case("config-shape-explainer-table-int", 2, ("explainers",), doc=put("explainers.dauc", 3)),
    Case("config-shape-gate-string", 2, ("gates.dauc.baseline_auc", "expected a table"),
         doc=put("gates", {"dauc.baseline_auc": "high"})),
    Case("config-shape-gates-list", 2, ("gates",), doc=put("gates", [1])),
    Case("config-shape-deep-nesting", 2, ("explainers.dauc.a",), doc=put("explainers.dauc.a", {"b": {"c": {"d": 1}}})),
    Case("config-shape-missing-model", 2, ("missing [model]",), doc=drop("model")),
    Case("config-shape-missing-data", 2, ("missing [data]",), doc=drop("data")),
    Case("config-shape-missing-inputs", 2, ("missing [[inputs]]",), doc=drop("inputs")),
    Case("config-shape-no-explainers", 2, ("no explainers to run",), doc=put("explainers", {})),
    Case("config-shape-not-toml", 2, ("not valid TOML",), doc=raw("[model\npath = 1\n")),
    Case("config-shape-binary", 2, ("config",), doc=raw("\x00\x01\x02 garbage")),
    Case("config-shape-empty-file", 2, ("missing [model]",), doc=raw("")),
]

# -- config-type: a value of the wrong type or range -------------------------------------------
for path, value, needle in [
    ("model.path", 3, "model.path"), ("model.batch_size", "big", "model.batch_size"),
    ("model.batch_size", 0, "batch_size"), ("model.threads", "all", "model.threads"),
    ("model.score", 7, "column 7"), ("model.output", "nope", "no output 'nope'"),
    ("data.files", 7, "data.files"), ("data.files", [3], "data.files"), ("data.tree", 3, "data.tree"),
    ("data.label", 1, "data.label"), ("data.step_size", "big", "data.step_size"),
    ("data.step_size", 0, "step_size"), ("data.step_size", -5, "step_size"), ("data.max_jets", 2.5, "max_jets"),
    ("data.nonfinite", "maybe", "data.nonfinite"), ("data.weight", 3, "data.weight"),
    ("inputs.0.name", 3, "inputs[0].name"), ("inputs.0.kind", "tower", "inputs[0].kind"),
    ("inputs.0.branches", "f0", "inputs[0].branches"), ("inputs.0.branches", [["f0"]], "inputs[0].branches"),
    ("execution.seed", "lucky", "execution.seed"), ("execution.progress", "yes", "execution.progress"),
    ("execution.cache_mb", -1, "cache_mb"), ("execution.workers", 0, "workers"),
    ("execution.partition_size", 0, "partition_size"), ("execution.executor", "gpu", "execution.executor"),
    ("explainers.dauc.groups", 3, "explainers.dauc.groups"), ("explainers.mad.target", "score", "explainers.mad"),
]:
    CASES.append(Case(f"config-type-{path}-{value!r}"[:60], 2, (needle,), doc=put(path, value)))

# -- config-key: unknown keys, with close matches ----------------------------------------------
for path, needle in [("model.pth", "model.pth"), ("data.fils", "data.fils"), ("data.tre", "data.tre"),
                     ("inputs.0.brnches", "brnches"), ("execution.sed", "execution.sed"),
                     ("explainers.dauc.grups", "grups"), ("modle", "modle"), ("refrence", "refrence")]:
    CASES.append(Case(f"config-key-{path}", 2, (needle, "close matches"), doc=put(path, {} if "." not in path else 1)))
CASES.append(Case("config-key-unknown-explainer", 2, ("unknown explainer 'dacu'", "close matches: dauc"),
                  doc=put("explainers.dacu", {})))

# -- path: files that are missing, empty, or not what they claim --------------------------------
CASES += [
    Case("path-data-missing", 2, ("nowhere.root", "not found"), doc=put("data.files", ["nowhere.root"])),
    Case("path-data-glob-empty", 2, ("*.nothing",), doc=put("data.files", ["*.nothing"])),
    Case("path-data-directory", 2, ("adir",), doc=put("data.files", ["adir"]),
         files={"adir": lambda p: p.mkdir(exist_ok=True)}),
    Case("path-data-empty-file", 2, ("empty.root",), doc=put("data.files", ["empty.root"]), files={"empty.root": b""}),
    Case("path-data-random-bytes", 2, ("noise.root", "not a readable ROOT file"),
         doc=put("data.files", ["noise.root"]), files={"noise.root": os.urandom(4096)}),
    Case("path-data-text", 2, ("text.root",), doc=put("data.files", ["text.root"]),
         files={"text.root": b"this is not a ROOT file\n" * 50}),
    Case("path-data-header-only", 2, ("head.root",), doc=put("data.files", ["head.root"]),
         files={"head.root": lambda p: p.write_bytes((p.parent / "jets.root").read_bytes()[:300])}),
    Case("path-data-cut-at-end", 2, ("short.root", "truncated"), doc=put("data.files", ["short.root"]),
         files={"short.root": lambda p: p.write_bytes((p.parent / "jets.root").read_bytes()[:-200])}),
    Case("path-model-missing", 2, ("gone.onnx", "not found"), doc=put("model.path", "gone.onnx")),
    Case("path-model-directory", 2, ("mdir",), doc=put("model.path", "mdir"),
         files={"mdir": lambda p: p.mkdir(exist_ok=True)}),
    Case("path-model-empty", 2, ("empty.onnx",), doc=put("model.path", "empty.onnx"), files={"empty.onnx": b""}),
    Case("path-model-random", 2, ("noise.onnx", "ONNX"), doc=put("model.path", "noise.onnx"),
         files={"noise.onnx": os.urandom(3000)}),
    Case("path-model-text", 2, ("text.onnx", "ONNX"), doc=put("model.path", "text.onnx"),
         files={"text.onnx": b"not a model\n" * 40}),
    Case("path-model-is-root", 2, ("jets.root",), doc=put("model.path", "jets.root")),
    Case("path-model-no-outputs", 2, ("noout.onnx", "declares no outputs"), doc=put("model.path", "noout.onnx"),
         files={"noout.onnx": no_outputs_model}),
    Case("path-config-missing", 2, ("absent.toml", "not found"), command=("audit", "absent.toml")),
    Case("path-config-directory", 2, ("adir2",), command=("audit", "adir2"),
         files={"adir2": lambda p: p.mkdir(exist_ok=True)}),
]

# -- tree: trees and branches that are not there or not of the right kind ------------------------
CASES += [
    Case("tree-missing", 2, ("no tree 'jet'", "close matches: jets"), doc=put("data.tree", "jet")),
    Case("tree-branch-missing", 2, ("no branch 'f9'",), doc=put("inputs.0.branches", ["f0", "f1", "f2", "f9"])),
    Case("tree-label-missing", 2, ("no branch 'sig'",), doc=put("data.label", "sig")),
    Case("tree-weight-missing", 2, ("no branch 'w'",), doc=put("data.weight", "w")),
    Case("tree-flat-is-jagged", 2, ("'part_px'", "jagged"),
         doc=put("inputs.0.branches", ["f0", "f1", "f2", "part_px"])),
    Case("tree-label-jagged", 2, ("'part_px'", "jagged"), doc=put("data.label", "part_px")),
    Case("tree-wrong-count", 2, ("expects shape", "builds"), doc=put("inputs.0.branches", ["f0", "f1"])),
    Case("tree-duplicate-feature", 2, ("appears twice",), doc=put("inputs.0.branches", ["f0", "f1", "f1", "f2"])),
    Case("tree-wrong-input-name", 2, ("'y'",), doc=put("inputs.0.name", "y")),
    Case("tree-input-twice", 2, ("configured twice",),
         doc=put("inputs", [BASE["inputs"][0], BASE["inputs"][0]])),
]

# -- numbers: labels, weights and inputs that would give wrong numbers ----------------------------
half = np.arange(N) % 2
CASES += [
    Case("numbers-label-fraction", 2, ("exactly 0", "0.5"), doc=put("data.files", ["l1.root"]),
         files={"l1.root": jets_with(is_signal=np.where(np.arange(N) == 3, 0.5, half))}),
    Case("numbers-label-two", 2, ("exactly 0", "2"), doc=put("data.files", ["l2.root"]),
         files={"l2.root": jets_with(is_signal=np.where(np.arange(N) == 3, 2, half).astype(np.int32))}),
    Case("numbers-label-nan", 2, ("exactly 0", "nan"), doc=put("data.files", ["l3.root"]),
         files={"l3.root": jets_with(is_signal=np.where(np.arange(N) == 3, np.nan, half))}),
    Case("numbers-label-negative", 2, ("exactly 0", "-1"), doc=put("data.files", ["l4.root"]),
         files={"l4.root": jets_with(is_signal=np.where(np.arange(N) == 3, -1, half).astype(np.int32))}),
    Case("numbers-weight-nan", 1, ("'weight'", "NaN or inf"),
         doc=lambda d: (put("data.files", ["w1.root"])(d), put("data.weight", "weight")(d)),
         files={"w1.root": jets_with(weight=np.where(np.arange(N) == 5, np.nan, 1.0))}),
    Case("numbers-weight-inf", 1, ("'weight'", "NaN or inf"),
         doc=lambda d: (put("data.files", ["w2.root"])(d), put("data.weight", "weight")(d)),
         files={"w2.root": jets_with(weight=np.where(np.arange(N) == 5, np.inf, 1.0))}),
    Case("numbers-input-nan", 1, ("NaN or inf", "nonfinite"), doc=put("data.files", ["i1.root"]),
         files={"i1.root": jets_with(f1=np.where(np.arange(N) == 9, np.nan, 0.5).astype(np.float32))}),
    Case("numbers-input-inf", 1, ("NaN or inf", "nonfinite"), doc=put("data.files", ["i2.root"]),
         files={"i2.root": jets_with(f1=np.where(np.arange(N) == 9, np.inf, 0.5).astype(np.float32))}),
    Case("numbers-all-dropped", 1, ("no jet is left",),
         doc=lambda d: (put("data.files", ["i3.root"])(d), put("data.nonfinite", "drop")(d)),
         files={"i3.root": jets_with(f0=np.full(N, np.nan, np.float32))}),
    Case("numbers-max-jets-zero", 2, ("no jets selected",), args=("--max-jets", "0")),
]

# -- output: where the report goes ----------------------------------------------------------------
CASES += [
    Case("output-is-a-file", 2, ("afile.txt", "is a file"), args=("--out", "afile.txt"), files={"afile.txt": b"x"}),
    Case("output-parent-is-a-file", 2, ("not a folder",), args=("--out", "afile2.txt/out"),
         files={"afile2.txt": b"x"}),
    Case("output-not-empty", 2, ("not empty", "--force"), args=("--out", "full"),
         files={"full": lambda p: (p.mkdir(exist_ok=True), (p / "notes.txt").write_text("mine"))}),
    Case("output-holds-data", 2, ("holds the audit's own input",),
         doc=put("data.files", ["outd/jets.root"]), args=("--out", "outd", "--force"),
         files={"outd": lambda p: (p.mkdir(exist_ok=True),
                                   (p / "jets.root").write_bytes((p.parent / "jets.root").read_bytes()))}),
    Case("output-holds-model", 2, ("holds the audit's own input",),
         doc=put("model.path", "outm/m.onnx"), args=("--out", "outm", "--force"),
         files={"outm": lambda p: (p.mkdir(exist_ok=True),
                                   (p / "m.onnx").write_bytes((p.parent / "m.onnx").read_bytes()))}),
    Case("output-holds-config", 2, ("holds the audit's own input",),
         command=("audit", "outc/audit.toml", "--out", "outc", "--force"),
         files={"outc": lambda p: (p.mkdir(exist_ok=True), (p / "audit.toml").write_text(toml_dumps(
             {**BASE, "model": {"path": "../m.onnx"}, "data": {**BASE["data"], "files": ["../jets.root"]}})))}),
]

# -- usage: the command line ----------------------------------------------------------------------
CASES += [
    Case("usage-unknown-option", 2, ("--frobnicate",), args=("--frobnicate",)),
    Case("usage-no-config", 2, ("CONFIG",), command=("audit",)),
    Case("usage-max-jets-negative", 2, ("--max-jets",), args=("--max-jets", "-1")),
    Case("usage-seed-text", 2, ("--seed",), args=("--seed", "abc")),
    Case("usage-unknown-explainer", 2, ("unknown explainer 'nope'",), args=("--explainer", "nope")),
    Case("usage-executor", 2, ("--executor",), args=("--executor", "gpu")),
    Case("usage-workers-zero", 2, ("--workers",), args=("--workers", "0")),
    Case("usage-scheduler-and-workers", 2, ("scheduler", "workers"),
         args=("--scheduler", "tcp://127.0.0.1:1", "--workers", "2")),
    Case("usage-unknown-command", 2, ("frob",), command=("frob",)),
    Case("usage-scheduler-unreachable", 1, ("cannot reach the Dask scheduler", "tcp://127.0.0.1:9"),
         args=("--scheduler", "tcp://127.0.0.1:9")),
]

# -- inspect and init on bad files -----------------------------------------------------------------
CASES += [
    Case("inspect-missing", 2, ("nothing.root",), command=("inspect", "nothing.root")),
    Case("inspect-random-root", 2, ("noise2.root", "not a readable ROOT file"), command=("inspect", "noise2.root"),
         files={"noise2.root": os.urandom(2048)}),
    Case("inspect-truncated-root", 2, ("short2.root", "truncated"), command=("inspect", "short2.root"),
         files={"short2.root": lambda p: p.write_bytes((p.parent / "jets.root").read_bytes()[:-100])}),
    Case("inspect-text-onnx", 2, ("text2.onnx", "ONNX"), command=("inspect", "text2.onnx"),
         files={"text2.onnx": b"hello\n" * 30}),
    Case("inspect-unknown-extension", 2, ("notes.txt",), command=("inspect", "notes.txt"),
         files={"notes.txt": b"hello"}),
    Case("init-model-missing", 2, ("gone2.onnx",), command=("init", "--model", "gone2.onnx", "--data", "jets.root")),
    Case("init-data-random", 2, ("noise3.root",), command=("init", "--model", "m.onnx", "--data", "noise3.root"),
         files={"noise3.root": os.urandom(2048)}),
    Case("init-tree-missing", 2, ("'nope'",), command=("init", "--model", "m.onnx", "--data", "jets.root",
                                                      "--tree", "nope")),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("campaign")
    jets_with()(d / "jets.root")
    save(mlp_model(dense_weights([4, 8, 1], seed=5), "gemm"), d / "m.onnx")
    return d


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (folder / "jets.root", folder / "m.onnx")}


def command_of(folder: Path, case: Case) -> list[str]:
    """Write the case's files and config; the hepaudit command line it runs."""
    for name, content in case.files.items():
        if callable(content):
            content(folder / name)
        else:
            (folder / name).write_bytes(content)
    if case.command:
        return list(case.command)
    doc = json.loads(json.dumps(BASE))
    text = case.doc(doc) if case.doc else None
    config = folder / f"{case.id}.toml"
    config.write_text(text if isinstance(text, str) else toml_dumps(doc))
    out = folder / f"out-{case.id}"
    return ["audit", str(config), *(["--out", str(out)] if "--out" not in case.args else []), "-q", *case.args]


@pytest.fixture(scope="module")
def results(folder: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every case's run: two at a time (each is a separate interpreter; the machine has two cores)."""
    from concurrent.futures import ThreadPoolExecutor

    before = digests(folder)
    commands = {case.id: command_of(folder, case) for case in CASES}
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = dict(zip(commands, pool.map(
            lambda c: subprocess.run([sys.executable, "-m", "hepaudit.cli", *c], capture_output=True, text=True,
                                     cwd=folder, timeout=300), commands.values())))
    assert digests(folder) == before  # no case touched the inputs
    assert not [p for p in folder.iterdir() if ".hepaudit-" in p.name]  # no staging folder left behind
    return runs


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(folder: Path, results: dict[str, subprocess.CompletedProcess[str]], case: Case) -> None:
    result = results[case.id]
    err = result.stderr
    assert result.returncode == case.code, (result.returncode, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line]
    assert 1 <= len(lines) <= 4, err
    for needle in case.needles:
        assert needle in err, (needle, err)
    if not case.command:
        assert not (folder / f"out-{case.id}" / "report.json").exists()
