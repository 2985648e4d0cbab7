"""Shared pieces of the benchmark scripts: the machine, peak memory, a scaled-up sample."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_SAMPLE = REPO / "examples" / "data" / "top_qcd_test.root"
EXAMPLE_MODEL = REPO / "examples" / "models" / "topodnn.onnx"


def machine() -> str:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " | load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
    return f"{platform.node()} | {os.cpu_count()} cores | {cpu} | Python {platform.python_version()}{load}"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux ru_maxrss is in kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


BRANCHES = ["jet_pt", "jet_eta", "jet_phi", "jet_mass", "is_signal",
            "part_px", "part_py", "part_pz", "part_energy"]


def repeated_sample(n_jets: int, out: Path, source: Path = EXAMPLE_SAMPLE, per_file: int = 500_000) -> list[Path]:
    """Write ``n_jets`` jets by repeating the example sample, into files of ``per_file`` jets."""
    with uproot.open(source) as handle:
        base = handle["jets"].arrays(BRANCHES)
    files = []
    written = 0
    index = 0
    while written < n_jets:
        path = out / f"repeated_{index:03d}.root"
        n = min(per_file, n_jets - written)
        if not path.exists():
            reps = int(np.ceil(n / len(base)))
            with uproot.recreate(path, compression=None) as f:
                tree = f.mktree("jets", {b: ("var * float64" if b.startswith("part_") else base[b].type.content)
                                         for b in BRANCHES})
                block = 50_000
                idx = np.arange(reps * len(base)) % len(base)
                idx = idx[:n]
                for start in range(0, n, block):
                    chunk = base[idx[start:start + block]]
                    tree.extend({b: chunk[b] for b in BRANCHES})
        files.append(path)
        written += n
        index += 1
    return files


def ensure_ak() -> None:
    ak.Array([1])  # import check


TOPODNN_SIZES = [90, 300, 102, 12, 6, 1]


def random_topodnn(path: Path, seed: int = 0) -> Path:
    """A TopoDNN-shaped MLP (Gemm, ReLU, Sigmoid) with random weights, for when the example is absent."""
    sys.path.insert(0, str(REPO / "tests"))
    from builders import dense_weights, mlp_model, save

    if not path.exists():
        save(mlp_model(dense_weights(TOPODNN_SIZES, seed=seed), "gemm"), path)
    return path


def topodnn_config(model: Path, files: list[Path], *, step: int | None = None, model_extra: str = "",
                   data_extra: str = "", extra: str = "") -> str:
    """An audit config for a TopoDNN on repeated example jets; ``extra`` adds tables at the end."""
    lines = ["[model]", f'path = "{model}"', model_extra,
             "[data]", f"files = {json.dumps([str(f) for f in files])}", 'tree = "jets"', 'label = "is_signal"',
             f"step_size = {step}" if step else "", data_extra,
             "[[inputs]]", 'name = "x"', 'kind = "constituents"',
             'momentum = { px = "part_px", py = "part_py", pz = "part_pz", energy = "part_energy" }',
             'features = ["pt", "eta", "phi"]', "max_particles = 30", 'preprocess = "topodnn"',
             extra]
    return "\n".join(line for line in lines if line) + "\n"


@contextlib.contextmanager
def worktree(revision: str) -> Iterator[Path]:
    """A detached git worktree of ``revision`` in a temporary folder, removed afterwards: the
    baseline of a before/after benchmark (run it with ``cwd`` and ``PYTHONPATH`` set to it)."""
    with tempfile.TemporaryDirectory(prefix="hepaudit-bench-baseline-") as tmp:
        tree = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(tree), revision], check=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
