"""Shared fixtures for the host acceptance tests: a small real audit setup and a CLI runner.

Everything is real: ROOT files written with uproot, ONNX models built with onnx.helper and
run by onnxruntime, and the ``hepaudit`` command run as a subprocess of this interpreter.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from builders import dense_weights, make_flat_jets, make_jets, mlp_model, save, toml_dumps, write_jets  # noqa: E402

N_JETS = 400
FEATURES = ["f0", "f1", "f2", "f3"]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``hepaudit ARGS`` as a real subprocess of this interpreter."""
    return subprocess.run([sys.executable, "-m", "hepaudit.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


@dataclass
class AuditSetup:
    """A folder with jets.root (flat f0..f3, jagged part_*, is_signal, weight) and m.onnx
    (a 4-8-1 Gemm MLP on the flat features), plus a base config to vary."""

    dir: Path
    jets: dict[str, object]
    weights: list
    base: dict[str, object] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.dir / "jets.root"

    @property
    def model(self) -> Path:
        return self.dir / "m.onnx"

    def doc(self) -> dict:
        return copy.deepcopy(self.base)

    def write(self, doc: dict | None = None, name: str = "audit.toml") -> Path:
        path = self.dir / name
        path.write_text(toml_dumps(self.doc() if doc is None else doc))
        return path

    def audit(self, *args: str, doc: dict | None = None,
              out: str = "out") -> subprocess.CompletedProcess[str]:
        cfg = self.write(doc)
        return run_cli("audit", cfg, "--out", self.dir / out, "-q", *args, cwd=self.dir)


def make_setup(folder: Path, n: int = N_JETS) -> AuditSetup:
    folder.mkdir(parents=True, exist_ok=True)
    jets = make_jets(n, seed=3, max_const=12)
    jets.update(make_flat_jets(n, len(FEATURES), seed=4))
    write_jets(folder / "jets.root", jets)
    weights = dense_weights([len(FEATURES), 8, 1], seed=5)
    save(mlp_model(weights, "gemm"), folder / "m.onnx")
    base = {
        "model": {"path": "m.onnx"},
        "data": {"files": ["jets.root"], "tree": "jets", "label": "is_signal", "step_size": 150},
        "inputs": [{"name": "x", "kind": "jet", "branches": list(FEATURES)}],
        "explainers": {"dauc": {}, "mad": {}},
    }
    return AuditSetup(folder, jets, weights, base)


@pytest.fixture
def setup(tmp_path: Path) -> AuditSetup:
    return make_setup(tmp_path / "audit")
