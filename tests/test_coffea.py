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
    chunked = {k: v / out["jets"] for k, v in out["sum_abs_lrp"].items()}
    assert set(chunked) == set(mean_abs)
    np.testing.assert_allclose([chunked[k] for k in mean_abs], list(mean_abs.values()), rtol=1e-5)
    scores, labels = whole.per_jet["score"], whole.per_jet["label"]
    np.testing.assert_array_equal(out["score_signal"], np.histogram(scores[labels == 1], np.linspace(0, 1, 21))[0])
