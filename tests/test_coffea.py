"""The coffea processor example (issue 23), run for real when coffea is installed (`.[coffea]`,
which the README's test command installs): hepaudit inside a processor, chunk by chunk, gives the
whole sample's per-jet numbers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import hepaudit

pytest.importorskip("coffea", reason="coffea not installed (pip install '.[coffea]')")

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (REPO / "examples" / "models" / "topodnn.onnx").exists(), reason="example model absent")
def test_coffea_processor_example_matches_one_audit_of_the_sample() -> None:
    spec = importlib.util.spec_from_file_location("coffea_processor", REPO / "examples" / "coffea_processor.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    sys.modules["coffea_processor"] = example
    spec.loader.exec_module(example)
    out = example.run(chunk=1700)  # three chunks
    assert out["jets"] == 5000
    whole = hepaudit.audit({**example.CONFIG, "data": {"files": [str(example.SAMPLE)], "tree": "jets",
                                                         "label": "is_signal"}}, out=None, warn=False)
    mean_abs = {s.feature: s.score for s in whole.explainers["lrp"].feature_importance}
    chunked = out["sum_abs_lrp"] / out["jets"]  # (constituent, feature) from lrp_x, chunk by chunk
    assert chunked.shape == (30, 3) and len(mean_abs) == 90
    for name, score in mean_abs.items():
        feature, particle = name.rsplit("_", 1)
        assert chunked[int(particle), ["pt", "eta", "phi"].index(feature)] == pytest.approx(score, rel=1e-5), name
    scores, labels = whole.per_jet["score"], whole.per_jet["label"]
    np.testing.assert_array_equal(out["score_signal"], np.histogram(scores[labels == 1], np.linspace(0, 1, 21))[0])
