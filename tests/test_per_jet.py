"""per_jet.root is a friend of the input chain: one entry per jet, in input order."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import uproot
from builders import make_flat_jets, make_jets, write_jets
from conftest import FEATURES, AuditSetup


def test_per_jet_root_is_a_friend_of_two_input_files(setup: AuditSetup) -> None:
    second = make_jets(130, seed=12, max_const=12)
    second.update(make_flat_jets(130, len(FEATURES), seed=13))
    write_jets(setup.dir / "jets_b.root", second)
    doc = setup.doc()
    doc["data"]["files"] = ["jets.root", "jets_b.root"]
    doc["data"]["step_size"] = 90  # chunks straddle the file boundary
    result = setup.audit(doc=doc)
    assert result.returncode == 0, result.stderr
    report = json.loads((setup.dir / "out" / "report.json").read_text())
    assert report["per_jet"] == "per_jet.root"

    inputs = {k: np.concatenate([np.asarray(setup.jets[k]), np.asarray(second[k])]) for k in FEATURES}
    labels = np.concatenate([setup.jets["is_signal"], second["is_signal"]])
    n = len(labels)
    with uproot.open(setup.dir / "out" / "per_jet.root") as f:
        tree = f["hepaudit"]
        assert tree.num_entries == n
        cols = tree.arrays(["entry", "score", "label"], library="np")
    with uproot.open(setup.data) as a, uproot.open(setup.dir / "jets_b.root") as b:
        assert a["jets"].num_entries + b["jets"].num_entries == n
    np.testing.assert_array_equal(cols["entry"], np.arange(n))
    assert cols["entry"].dtype == np.int64
    np.testing.assert_array_equal(cols["label"], labels)
    x = np.stack([inputs[k] for k in FEATURES], axis=1).astype(np.float32)
    direct = ort.InferenceSession(str(setup.model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(cols["score"], direct[:, 0], rtol=1e-6, atol=1e-7)


def test_per_jet_entries_with_max_jets(setup: AuditSetup) -> None:
    result = setup.audit("--max-jets", "123")
    assert result.returncode == 0, result.stderr
    with uproot.open(setup.dir / "out" / "per_jet.root") as f:
        entry = f["hepaudit"]["entry"].array(library="np")
    np.testing.assert_array_equal(entry, np.arange(123))


def test_branches_carry_titles_and_their_data_survives_many_chunks(tmp_path) -> None:
    """Titles say what a branch holds; setting them must not disturb the data, also after the
    tree's metadata is laid out again for more baskets (25 chunks > uproot's initial 10)."""
    from hepaudit.report.per_jet import PerJetWriter

    writer = PerJetWriter(tmp_path / "per_jet.root")
    rng = np.random.default_rng(1)
    written = []
    for k in range(25):
        cols = {"entry": np.arange(7 * k, 7 * k + 7), "score": rng.random(7).astype(np.float32),
                "lrp_x": rng.random((7, 4, 3)).astype(np.float32), "myplugin_value": rng.random(7)}
        written.append(cols)
        writer.write(cols)
    writer.add_tree("latent", {"entry": np.arange(5), "latent_pc": rng.random((5, 2)).astype(np.float32),
                               "tau21": rng.random(5)})
    assert writer.close()
    with uproot.open(tmp_path / "per_jet.root") as f:
        tree, latent = f["hepaudit"], f["latent"]
        assert tree["score"].title.startswith("tagger score")
        assert tree["entry"].title.startswith("entry number")
        lrp_title = tree["lrp_x"].title
        assert lrp_title.startswith("LRP relevance of x") and "[particle][feature], 4 x 3" in lrp_title
        assert tree["myplugin_value"].title == "myplugin_value/D"  # no rule: uproot's leaf list
        assert latent["latent_pc"].title.startswith("latent:") and "tau_21" in latent["tau21"].title
        got = tree.arrays(library="np")
        for name in written[0]:
            np.testing.assert_array_equal(got[name], np.concatenate([c[name] for c in written]))
        assert latent["latent_pc"].array(library="np").shape == (5, 2)


def test_columns_in_memory_do_not_alias_a_reused_buffer() -> None:
    """out=None keeps the per-jet columns in memory: an explainer that refills one buffer for
    every chunk must not see the earlier chunks change (the file writer copies them out)."""
    from hepaudit.report.per_jet import PerJetColumns

    sink = PerJetColumns()
    buffer = np.zeros(4, np.float32)
    for k in range(3):
        buffer[:] = k
        sink.write({"entry": np.arange(4 * k, 4 * k + 4), "score": buffer})
    sink.add_tree("latent", {"entry": np.arange(2), "latent_pc": np.ones((2, 3), np.float32)})
    assert sink.close()
    arrays = sink.arrays()
    np.testing.assert_array_equal(arrays["score"], np.repeat(np.arange(3, dtype=np.float32), 4))
    np.testing.assert_array_equal(arrays["entry"], np.arange(12))
    assert arrays["latent"]["latent_pc"].shape == (2, 3)
