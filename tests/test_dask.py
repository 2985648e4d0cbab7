"""The Dask executor against the local one on a real LocalCluster (2 worker processes).

Several ROOT files cut into several partitions each; the report, the per-jet tree and the
score histograms must equal the local executor's (≤ 1e-9 relative for the deterministic
explainers, equal per seed for SHAP). A worker killed mid-audit must not change a number:
a test-only explainer calls ``os._exit`` once (guarded by a marker file) and counts its jets
and the sum of their entry numbers, which a lost or double-counted partition would change.
Corrupt files fail the audit with their name, or are left out with ``skip_corrupt``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import uproot

sys.path.insert(0, str(Path(__file__).parent))

from builders import (  # noqa: E402
    dense_weights,
    make_flat_jets,
    make_jets,
    mann_whitney_auc,
    mlp_model,
    save,
    toml_dumps,
    write_jets,
)

import hepaudit  # noqa: E402
from hepaudit.data.reading import Sample  # noqa: E402
from hepaudit.data.stats import InputStats  # noqa: E402
from hepaudit.errors import DataError  # noqa: E402
from hepaudit.executors.partitions import merge_stats, tree_levels  # noqa: E402
from hepaudit.explainers.base import Chunk, Explainer  # noqa: E402
from hepaudit.plugins import hookimpl  # noqa: E402
from hepaudit.results import ExplainerResult  # noqa: E402

pytestmark = pytest.mark.slow  # a real Dask cluster: `pytest -m "not slow"` leaves it out

distributed = pytest.importorskip("distributed")

FEATURES = ["f0", "f1", "f2", "f3"]
SIZES = (230, 410, 170)  # jets per file: partitions of 100 jets end mid-file and at odd places


# -- a small audit over three files ------------------------------------------------------------

def write_files(folder: Path, sizes: tuple[int, ...] = SIZES) -> list[Path]:
    paths = []
    for i, n in enumerate(sizes):
        jets = make_jets(n, seed=10 + i, max_const=8)
        jets.update(make_flat_jets(n, len(FEATURES), seed=20 + i))
        paths.append(write_jets(folder / f"jets_{i}.root", jets))
    return paths


def base_doc(files: list[str], explainers: dict[str, dict]) -> dict:
    return {
        "model": {"path": "m.onnx", "threads": 1},
        "data": {"files": files, "tree": "jets", "label": "is_signal", "weight": "weight", "step_size": 50},
        "inputs": [{"name": "x", "kind": "jet", "branches": list(FEATURES)}],
        "explainers": explainers,
        "execution": {"progress": False, "partition_size": 100},
    }


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("dask")
    write_files(d)
    save(mlp_model(dense_weights([len(FEATURES), 8, 6, 1], seed=7), "gemm"), d / "m.onnx")
    return d


def write_config(folder: Path, doc: dict, name: str) -> Path:
    path = folder / name
    path.write_text(toml_dumps(doc))
    return path


@pytest.fixture(scope="module")
def cluster() -> object:
    """One real cluster for the module: 2 worker processes, 1 thread each."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as c, distributed.Client(c) as client:
        yield client


def scores(result: ExplainerResult) -> dict[str, tuple]:
    return {s.feature: (s.score, s.score_signal, s.score_background) for s in result.feature_importance or []}


def assert_close(a: object, b: object, where: str) -> None:
    """Equal structure; numbers equal to 1e-9 relative (summation order), everything else exactly."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for key in a:
            assert_close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)) and not all(isinstance(v, (int, float)) for v in a):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{where}[{i}]")
    elif a is None or b is None or isinstance(a, (str, bool)):
        assert a == b, where
    else:
        np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-9, atol=1e-15,
                                   err_msg=where)


def assert_same_report(local: hepaudit.AuditReport, dask: hepaudit.AuditReport, ignore: tuple[str, ...] = ()) -> None:
    """Equal reports; ``ignore`` names fields that hold the output folder's path."""
    assert dask.data["n_jets"] == local.data["n_jets"]
    assert (dask.data["n_signal"], dask.data["n_background"]) == (local.data["n_signal"], local.data["n_background"])
    for name, a in local.explainers.items():
        b = dask.explainers[name]
        assert (a.status, a.error) == ("ok", None), (name, a.error)
        assert (b.status, b.error) == ("ok", None), (name, b.error)
        sa, sb = scores(a), scores(b)
        assert list(sa) == list(sb), name  # the same ranking
        for feature in sa:
            for x, y in zip(sa[feature], sb[feature]):
                assert_close(x, y, f"{name} {feature}")
        assert_close({k: v for k, v in a.fields.items() if k not in ignore},
                     {k: v for k, v in b.fields.items() if k not in ignore}, f"{name}.fields")
        assert (a.summary, a.warnings) == (b.summary, b.warnings), name
    assert [s.data for s in local.sections if s.key == "score"] == [s.data for s in dask.sections if s.key == "score"]


def per_jet(out: Path) -> dict[str, np.ndarray]:
    with uproot.open(out / "per_jet.root") as handle:
        return handle["hepaudit"].arrays(library="np")


# -- pieces that need no cluster -----------------------------------------------------------------

def test_partitions_cover_the_chain_in_order(folder: Path) -> None:
    from hepaudit.config import SampleConfig

    files = tuple(str(p) for p in sorted(folder.glob("jets_*.root")))
    for max_jets, size in ((None, 100), (500, 120), (None, None), (230, 1)):
        sample = Sample(SampleConfig(files=files, step_size=50, max_jets=max_jets))
        sample.check(FEATURES, [])
        parts = sample.partitions(size)
        assert all(p.start % 50 == 0 for p in parts)  # chunk boundaries are those of one pass
        whole = [(c.entries, c.arrays["f1"].to_numpy()) for c in sample.chunks(["f1"])]
        split = [(c.entries, c.arrays["f1"].to_numpy()) for p in parts for c in sample.chunks(["f1"], partition=p)]
        assert len(whole) == len(split)
        for (ea, fa), (eb, fb) in zip(whole, split):
            np.testing.assert_array_equal(ea, eb)
            np.testing.assert_array_equal(fa, fb)
        n = sum(SIZES) if max_jets is None else max_jets
        np.testing.assert_array_equal(np.concatenate([e for e, _ in split]), np.arange(n))
        direct = np.concatenate([uproot.open(f)["jets"]["f1"].array(library="np") for f in files])[:n]
        np.testing.assert_array_equal(np.concatenate([f for _, f in split]), direct)


def test_per_chunk_stats_fold_to_the_single_pass_bit_for_bit() -> None:
    rng = np.random.default_rng(1)
    chunks = [rng.normal(3.0, 7.0, (n, 5)).astype(np.float32) for n in (40, 13, 77, 1)]
    single = InputStats()
    folded = InputStats()
    for x in chunks:
        single.update({"x": x}, x)
        one = InputStats()
        one.update({"x": x}, x)
        folded = merge_stats(folded, one)
    assert folded.count == single.count == 131
    for a, b in ((folded.sums["x"], single.sums["x"]), (folded.cross, single.cross),
                 (folded.feature_sumsq, single.feature_sumsq), (folded.abs_max, single.abs_max)):
        assert np.array_equal(a, b)
    np.testing.assert_allclose(folded.sums["x"], np.concatenate(chunks).astype(np.float64).sum(0), rtol=1e-12)


def test_tree_levels_merge_consecutive_ranges() -> None:
    assert tree_levels(1, 4) == []
    levels = tree_levels(10, 4)
    assert levels == [[(0, 4), (4, 8), (8, 10)], [(0, 3)]]
    for n in range(1, 40):
        for k in (2, 3, 4):
            width = n
            for level in tree_levels(n, k):
                assert level[0][0] == 0 and level[-1][1] == width
                assert all(a[1] == b[0] for a, b in zip(level, level[1:]))  # contiguous, in order
                width = len(level)
            assert width == 1


# -- against the local executor on a real cluster ------------------------------------------------

EXPLAINERS = {
    "dauc": {"groups": {"pair": ["f0", "f1"]}},
    "mad": {"target": "logit", "relative": True, "iqr_clip": True},  # per-jet |Δ| spilled, pickled between workers
    "lrp": {"rule": "epsilon"},
    "gradient": {"method": "integrated_gradients", "steps": 8},
    "nap": {"figure": False},
    "shap": {"jets": 15, "method": "permutation", "samples": 64},
}


def test_dask_report_equals_the_local_one(folder: Path, cluster: object) -> None:
    files = sorted(str(p.name) for p in folder.glob("jets_*.root"))
    cfg = write_config(folder, base_doc(files, EXPLAINERS), "all.toml")
    local = hepaudit.audit(cfg, out=folder / "local", force=True, seed=3)
    dask = hepaudit.audit(cfg, out=folder / "dask", force=True, seed=3, scheduler=cluster)
    assert_same_report(local, dask)
    assert local.explainers["shap"].fields["jets_explained"] == 30

    a, b = per_jet(folder / "local"), per_jet(folder / "dask")
    assert sorted(a) == sorted(b)
    for column in a:
        np.testing.assert_allclose(a[column], b[column], rtol=1e-9, err_msg=column)
    with uproot.open(folder / "dask" / "per_jet.root") as handle:  # SHAP's own tree, same jets, same values
        assert handle["shap"].num_entries == 30
    assert not (folder / "dask" / "per_jet.parts").exists()

    # independent of both executors: the audited jets, their labels, and the baseline AUC
    n = sum(SIZES)
    np.testing.assert_array_equal(b["entry"], np.arange(n))
    labels = np.concatenate([uproot.open(folder / f)["jets"]["is_signal"].array(library="np") for f in files])
    weights = np.concatenate([uproot.open(folder / f)["jets"]["weight"].array(library="np") for f in files])
    np.testing.assert_array_equal(b["label"], labels)
    auc = mann_whitney_auc(b["score"], labels, weights)
    assert dask.explainers["dauc"].fields["baseline_auc"] == pytest.approx(auc, rel=1e-6)


def test_per_jet_in_memory_from_dask_when_asked(folder: Path, cluster: object) -> None:
    """out=None with keep_per_jet=True: the workers' parts are gathered into memory, column for
    column what the local executor keeps."""
    files = sorted(str(p.name) for p in folder.glob("jets_*.root"))
    cfg = write_config(folder, base_doc(files, {"lrp": {"rule": "epsilon"}}), "in_memory.toml")
    local = hepaudit.audit(cfg, out=None, seed=3, warn=False)
    dask = hepaudit.audit(cfg, out=None, seed=3, scheduler=cluster, keep_per_jet=True, warn=False)
    assert dask.per_jet_file is None and sorted(dask.per_jet) == sorted(local.per_jet)
    assert len(dask.per_jet["entry"]) == sum(SIZES) and any(c.startswith("lrp_") for c in dask.per_jet)
    for column, values in local.per_jet.items():
        np.testing.assert_allclose(dask.per_jet[column], values, rtol=1e-9, err_msg=column)


@dataclass(frozen=True)
class CrashOptions:
    marker: str = ""


@dataclass
class CrashState:
    n: int = 0
    entry_sum: int = 0
    score_sum: float = 0.0


class CrashOnce(Explainer[CrashState]):
    """Counts jets; the first update anywhere (no marker file yet) kills its worker process."""

    name = "crash_once"
    Options = CrashOptions

    def start(self) -> CrashState:
        return CrashState()

    def update(self, state: CrashState, chunk: Chunk) -> CrashState:
        marker = Path(self.options.marker)
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)  # the worker process dies mid-partition, its results with it
        state.n += len(chunk)
        state.entry_sum += int(chunk.entries.sum())
        state.score_sum += float(chunk.score.sum())
        return state

    def merge(self, a: CrashState, b: CrashState) -> CrashState:
        return CrashState(a.n + b.n, a.entry_sum + b.entry_sum, a.score_sum + b.score_sum)

    def finish(self, state: CrashState) -> ExplainerResult:
        return self.result(fields={"n": state.n, "entry_sum": state.entry_sum, "score_sum": state.score_sum})


class CrashPlugin:
    @hookimpl
    def hepaudit_register_explainers(self, register: object) -> None:
        register(CrashOnce)  # type: ignore[operator]


def test_a_worker_killed_mid_audit_changes_no_number(folder: Path, cluster: object, tmp_path: Path) -> None:
    files = sorted(str(p.name) for p in folder.glob("jets_*.root"))
    marker = tmp_path / "crashed"
    doc = base_doc(files, {"dauc": {}, "mad": {}, "crash_once": {"marker": str(marker)}})
    cfg = write_config(folder, doc, "crash.toml")
    plugins = [("crash_once", CrashPlugin())]
    workers_before = set(cluster.scheduler_info()["workers"])  # type: ignore[attr-defined]
    dask = hepaudit.audit(cfg, out=folder / "crash-dask", force=True, scheduler=cluster, plugins=plugins)
    assert marker.exists()  # a worker did die
    assert int(marker.read_text()) != os.getpid()
    cluster.wait_for_workers(2, timeout=60)  # type: ignore[attr-defined]
    assert set(cluster.scheduler_info()["workers"]) != workers_before  # type: ignore[attr-defined]

    local = hepaudit.audit(cfg, out=None, plugins=plugins)  # the marker exists now: no crash here
    assert_same_report(local, dask)
    n = sum(SIZES)
    fields = dask.explainers["crash_once"].fields
    assert (fields["n"], fields["entry_sum"]) == (n, n * (n - 1) // 2)  # every jet once, none twice
    got = per_jet(folder / "crash-dask")
    np.testing.assert_array_equal(got["entry"], np.arange(n))
    assert fields["score_sum"] == pytest.approx(float(got["score"].astype(np.float64).sum()), rel=1e-6)


def corrupt_basket(path: Path, branch: str) -> None:
    """Overwrite the key header of the branch's first basket: the file and tree still open."""
    with uproot.open(path) as handle:
        seek = int(handle["jets"][branch].member("fBasketSeek")[0])
    with open(path, "r+b") as f:
        f.seek(seek)
        f.write(b"\xff" * 32)


def test_a_corrupt_file_fails_with_its_name_or_is_skipped(folder: Path, cluster: object, tmp_path: Path) -> None:
    d = tmp_path / "corrupt"
    d.mkdir()
    paths = write_files(d, (120, 140, 90, 60))
    save(mlp_model(dense_weights([len(FEATURES), 8, 6, 1], seed=7), "gemm"), d / "m.onnx")
    corrupt_basket(paths[1], "f2")
    truncated = paths[3].read_bytes()
    paths[3].write_bytes(truncated[: len(truncated) // 3])  # not a ROOT file any more
    names = [p.name for p in paths]
    explainers = {"dauc": {}, "mad": {}}

    fail = write_config(d, base_doc(names[:3], explainers), "fail.toml")
    with pytest.raises(DataError, match="jets_1.root"):
        hepaudit.audit(fail, out=None, scheduler=cluster)
    with pytest.raises(DataError, match="jets_1.root"):
        hepaudit.audit(fail, out=None)  # the local executor too
    with pytest.raises(DataError, match="jets_3.root"):
        hepaudit.audit(write_config(d, base_doc([names[0], names[3]], explainers), "trunc.toml"), out=None,
                       scheduler=cluster)

    doc = base_doc(names, explainers)
    doc["execution"]["skip_corrupt"] = True
    skipped = hepaudit.audit(write_config(d, doc, "skip.toml"), out=d / "skip", scheduler=cluster)
    good = hepaudit.audit(write_config(d, base_doc([names[0], names[2]], explainers), "good.toml"), out=d / "good")
    assert skipped.data["n_jets"] == 120 + 90
    assert_same_report(good, skipped)
    text = "\n".join(skipped.warnings)
    assert "jets_1.root" in text and "jets_3.root" in text
    assert sorted(skipped.data["skipped_files"]) == [str(paths[1]), str(paths[3])]
    # jets_1's entries (120..259) are missing from the per-jet tree, the others are there
    entries = per_jet(d / "skip")["entry"]
    np.testing.assert_array_equal(entries, np.r_[0:120, 260:350])
    # a reference sample read on the workers: its damaged file is named too
    doc = base_doc([names[2]], {"ood_ae": {"variance": 0.9}})
    doc["reference"] = {"files": [names[0], names[1]], "tree": "jets", "step_size": 50}
    doc["execution"]["skip_corrupt"] = True
    with_reference = hepaudit.audit(write_config(d, doc, "skip_ref.toml"), out=None, scheduler=cluster)
    assert with_reference.explainers["ood_ae"].status == "ok"
    assert any("jets_1.root" in w for w in with_reference.warnings)


def test_worker_memory_does_not_keep_partitions(folder: Path, cluster: object, tmp_path: Path) -> None:
    """After an audit, a worker holds only its cached context: no state or chunk of a partition."""
    files = sorted(str(p.name) for p in folder.glob("jets_*.root"))
    cfg = write_config(folder, base_doc(files, {"mad": {}}), "mem.toml")
    hepaudit.audit(cfg, out=None, scheduler=cluster)

    def held(dask_worker: object) -> tuple[int, int]:  # client.run passes the worker by this name
        from hepaudit.executors import dask as executor

        return len(dask_worker.data), len(executor._CACHE)  # type: ignore[attr-defined]

    for n_data, n_cache in cluster.run(held).values():  # type: ignore[attr-defined]
        assert n_data == 0  # every task result was released once the client had the reduced state
        assert n_cache <= 2


def test_cli_executor_dask_with_local_workers(folder: Path) -> None:
    from conftest import run_cli

    files = sorted(str(p.name) for p in folder.glob("jets_*.root"))
    cfg = write_config(folder, base_doc(files, {"mad": {}}), "cli.toml")
    done = run_cli("audit", cfg, "--out", folder / "cli-out", "-q", "--force", "--workers", "1", cwd=folder,
                   timeout=180)
    assert done.returncode == 0, done.stderr
    local = hepaudit.audit(cfg, out=None)
    import json

    report = json.loads((folder / "cli-out" / "report.json").read_text())
    assert report["data"]["n_jets"] == sum(SIZES)
    got = {s["feature"]: s["score"] for s in report["explainers"]["mad"]["feature_importance"]}
    for s in local.explainers["mad"].feature_importance:
        assert got[s.feature] == pytest.approx(s.score, rel=1e-9)
    bad = run_cli("audit", cfg, "--out", folder / "cli-bad", "--executor", "local", "--workers", "2", cwd=folder)
    assert bad.returncode == 2 and "executor" in bad.stderr


def test_explainers_with_a_reference_pass_run_on_the_workers(folder: Path, cluster: object) -> None:
    """ood_ae, ood_ensemble and calibration: reference pass as tasks, prepared on every worker,
    the reference state merged in before finish; the report and per-jet columns are the local ones."""
    files = sorted(str(p.name) for p in folder.glob("jets_*.root"))
    explainers = {"mad": {}, "ood_ae": {}, "ood_ensemble": {"members": ["m.onnx"], "include_audited": True,
                                                            "max_reference_jets": 40},
                  "calibration": {}}
    doc = base_doc(files, explainers)
    doc["reference"] = {"files": files[:2], "tree": "jets", "label": "is_signal", "step_size": 50}
    cfg = write_config(folder, doc, "ood.toml")
    local = hepaudit.audit(cfg, out=folder / "ood-local", force=True)
    dask = hepaudit.audit(cfg, out=folder / "ood-dask", force=True, scheduler=cluster)
    assert_same_report(local, dask, ignore=("saved_autoencoder",))
    assert local.explainers["ood_ae"].fields["reference_jets"] == 640  # 230 + 410, counted once
    assert dask.explainers["ood_ensemble"].fields["reference_held_out_jets"] <= 40  # the bounded reservoir
    assert Path(dask.explainers["ood_ae"].fields["saved_autoencoder"]).parent == folder / "ood-dask"
    assert not any("local executor" in w for w in dask.warnings)
    a, b = per_jet(folder / "ood-local"), per_jet(folder / "ood-dask")
    assert {"ood_ae_score", "ood_ensemble_std", "ood_flag"} <= set(b)
    for column in a:
        np.testing.assert_array_equal(a[column], b[column])
    # their figures are drawn on the client from the results' fields, after the workers finished
    drawn = {"ood_ae.png", "ood_ensemble.png", "calibration_reliability.png"}
    assert drawn <= {p.name for p in (folder / "ood-dask" / "figures").iterdir()}
    assert dask.timing["figures_s"] > 0 and not any("could not be drawn" in w for w in dask.warnings)


EVERY_BUILTIN = {
    **EXPLAINERS,
    "nap": {},  # with its figure: the numbers behind it are in the result
    "latent": {},
    "ood_ae": {},
    "ood_ensemble": {"members": ["m.onnx"], "include_audited": True, "max_reference_jets": 40},
    "calibration": {},
}


def test_every_builtin_agrees_on_one_partition_several_and_dask(folder: Path, cluster: object) -> None:
    """Every built-in explainer: the local executor with one partition, with several (every
    ``merge`` runs, in Dask's tree), and Dask give the same report.json — the numbers behind
    every figure included — and the same per_jet.root, to 1e-9."""
    files = sorted(str(p.name) for p in folder.glob("jets_*.root"))
    doc = base_doc(files, EVERY_BUILTIN)
    doc["reference"] = {"files": files[:2], "tree": "jets", "label": "is_signal", "step_size": 50}
    several = write_config(folder, doc, "every.toml")
    del doc["execution"]["partition_size"]
    one = write_config(folder, doc, "every-one.toml")
    reports = {
        "one": hepaudit.audit(one, out=folder / "every-one", force=True, seed=3),
        "several": hepaudit.audit(several, out=folder / "every-several", force=True, seed=3),
        "dask": hepaudit.audit(several, out=folder / "every-dask", force=True, seed=3, scheduler=cluster),
    }
    ignore = ("saved_autoencoder",)  # the output folder's path
    assert_same_report(reports["several"], reports["dask"], ignore=ignore)
    assert_same_report(reports["one"], reports["several"], ignore=ignore)
    lrp = reports["several"].explainers["lrp"].fields
    counted = sum(sum(p["signal"]["jets"]) + sum(p["background"]["jets"]) for p in lrp["profiles"].values())
    assert counted == len(lrp["profiles"]) * sum(SIZES)  # every jet in every profile (it was half on Dask)
    columns = {name: per_jet(folder / f"every-{name}") for name in reports}
    for name in ("several", "dask"):
        assert sorted(columns[name]) == sorted(columns["one"])
        for column in columns["one"]:
            np.testing.assert_allclose(columns[name][column], columns["one"][column], rtol=1e-9, err_msg=column)
    # the per-jet attributions behind the beeswarm and dependence plots: the same jets, the same values
    for name in ("shap", "lrp", "gradient"):
        expected = reports["one"].explainers[name].explanation
        assert expected is not None and len(expected) > 0, name
        for other in ("several", "dask"):
            got = reports[other].explainers[name].explanation
            assert got is not None, (name, other)
            np.testing.assert_array_equal(got.entries, expected.entries, err_msg=f"{name} {other}")
            np.testing.assert_allclose(got.values, expected.values, rtol=1e-9, err_msg=f"{name} {other}")
    # and their figures were drawn, on the client
    drawn = {p.name for p in (folder / "every-dask" / "figures").iterdir()}
    assert {"lrp_profiles.png", "lrp_beeswarm.png", "shap_beeswarm.png", "nap_diagram.png",
            "latent_components.png"} <= drawn
