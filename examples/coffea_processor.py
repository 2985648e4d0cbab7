"""Audit a tagger inside a coffea processor: each chunk's jets go to ``hepaudit.audit(arrays=...)``.

The processor reads the bundled top/QCD jets chunk by chunk (coffea's Runner, BaseSchema for
this flat ntuple), hands the branches the TopoDNN needs to hepaudit as arrays (no file), and
accumulates per-jet results the way a processor accumulates histograms: the jets seen, the
sum of |LRP relevance| per input and the tagger score per class. LRP is a per-jet method, so
the accumulated mean |R| is the one an audit of the whole sample gives (tests/test_coffea.py
checks it). Methods that need every jet at once (ΔAUC's exact AUC) belong in one audit of the
whole sample instead.

    pip install ".[coffea]"
    python examples/coffea_processor.py [--chunk 2500]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

import hepaudit

HERE = Path(__file__).resolve().parent
SAMPLE = HERE / "data" / "top_qcd_test.root"
BRANCHES = ["part_px", "part_py", "part_pz", "part_energy", "is_signal"]

CONFIG: dict[str, Any] = {
    "model": {"path": str(HERE / "models" / "topodnn.onnx")},
    "data": {"label": "is_signal"},  # no files: the jets come from the processor
    "inputs": [{"name": "x", "kind": "constituents", "features": ["pt", "eta", "phi"], "max_particles": 30,
                "momentum": {"px": "part_px", "py": "part_py", "pz": "part_pz", "energy": "part_energy"},
                "preprocess": "topodnn", "layout": "flat"}],
    "explainers": {"lrp": {}},
    "execution": {"progress": False, "bootstrap": 0},
}


def audit_jets(events: Any) -> dict[str, Any]:
    """One chunk: hepaudit on the chunk's jets, reduced to sums that add across chunks."""
    report = hepaudit.audit(CONFIG, arrays={name: events[name] for name in BRANCHES}, out=None, warn=False)
    per_jet = report.per_jet
    relevance = np.abs(per_jet["lrp_x"]).sum(axis=0)  # (30 constituents, 3 features): lrp_x is (jets, 30, 3)
    labels = np.asarray(per_jet["label"])
    scores = np.asarray(per_jet["score"])
    edges = np.linspace(0.0, 1.0, 21)
    return {"jets": len(scores), "sum_abs_lrp": relevance,
            "score_signal": np.histogram(scores[labels == 1], edges)[0],
            "score_background": np.histogram(scores[labels == 0], edges)[0]}


def run(chunk: int = 2500) -> dict[str, Any]:
    """The processor over the bundled sample, coffea's iterative executor; the accumulated output."""
    from coffea import processor
    from coffea.nanoevents import BaseSchema

    class AuditProcessor(processor.ProcessorABC):  # type: ignore[misc]
        def process(self, events: Any) -> dict[str, Any]:
            return audit_jets(events)

        def postprocess(self, accumulator: dict[str, Any]) -> dict[str, Any]:
            return accumulator

    runner = processor.Runner(executor=processor.IterativeExecutor(), schema=BaseSchema, chunksize=chunk)
    return runner({"top_qcd": [str(SAMPLE)]}, processor_instance=AuditProcessor(), treename="jets")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunk", type=int, default=2500, help="jets per coffea chunk")
    args = parser.parse_args()
    out = run(args.chunk)
    mean = out["sum_abs_lrp"] / out["jets"]  # (constituent, feature)
    features = CONFIG["inputs"][0]["features"]
    print(f"{out['jets']} jets audited chunk by chunk; mean |LRP relevance|, top 5:")
    for flat in np.argsort(-mean, axis=None)[:5]:
        p, f = np.unravel_index(flat, mean.shape)
        print(f"  {features[f]}_{p:<5} {mean[p, f]:.4f}")
    print("score histograms (20 bins on [0, 1]): signal", out["score_signal"].tolist())
    print("                                      background", out["score_background"].tolist())


if __name__ == "__main__":
    main()
