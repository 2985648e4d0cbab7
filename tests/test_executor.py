"""The local executor's replay of the x̄ pass: reading once must change no number."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import uproot
from conftest import make_setup

from hepaudit.audit import audit


def _run(setup, cache_mb: int, out: Path):  # type: ignore[no-untyped-def]
    doc = setup.doc()
    doc["execution"] = {"cache_mb": cache_mb, "progress": False}
    doc["data"]["nonfinite"] = "drop"
    return audit(setup.write(doc, f"audit_{cache_mb}.toml"), out=out)


def test_replayed_chunks_give_the_same_report_as_reading_twice(tmp_path: Path) -> None:
    setup = make_setup(tmp_path / "audit")
    # poison a few jets so the non-finite policy drops some in more than one chunk
    with uproot.open(setup.data) as handle:
        arrays = handle["jets"].arrays(library="np")
    for entry in (3, 170, 171, 399):
        arrays["f1"][entry] = np.nan
    with uproot.recreate(setup.data) as handle:
        handle.mktree("jets", {k: v.dtype for k, v in arrays.items() if v.dtype != object})
        handle["jets"].extend({k: v for k, v in arrays.items() if v.dtype != object})

    kept = _run(setup, 512, tmp_path / "kept")
    reread = _run(setup, 0, tmp_path / "reread")
    for name in ("dauc", "mad"):
        a, b = kept.explainers[name], reread.explainers[name]
        assert a.status == b.status == "ok"
        assert [s.to_dict() for s in a.feature_importance] == [s.to_dict() for s in b.feature_importance]
    assert kept.explainers["dauc"].fields["baseline_auc"] == reread.explainers["dauc"].fields["baseline_auc"]
    assert kept.data["n_jets"] == reread.data["n_jets"] == 396
    assert kept.warnings == reread.warnings and any("4 jets" in w for w in kept.warnings)
    # 400 jets in chunks of 150: the replay reads the 3 chunks once, the re-read twice
    assert kept.timing["chunks_read"] == 3 and reread.timing["chunks_read"] == 6
    with uproot.open(tmp_path / "kept" / "per_jet.root") as a, uproot.open(tmp_path / "reread" / "per_jet.root") as b:
        ta, tb = a["hepaudit"].arrays(library="np"), b["hepaudit"].arrays(library="np")
    for column in ("entry", "score", "label"):
        np.testing.assert_array_equal(ta[column], tb[column])
    assert not {3, 170, 171, 399} & set(ta["entry"].tolist())
