"""The shape of a run: the merge tree, check_explainer, progress and cancellation, the plugin surface.

Everything runs the real machinery on real files: tiny ROOT files and ONNX models written by
:mod:`hepaudit.testing`, audits through :func:`hepaudit.audit`, ``import hepaudit`` in a
fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

import hepaudit
from hepaudit.api import Chunk, Explainer, ExplainerResult, FeatureScore, hookimpl
from hepaudit.executors.partitions import MergeTree, tree_levels
from hepaudit.plugins import PluginHost
from hepaudit.run.overrides import apply_overrides
from hepaudit.run.progress import AuditCancelled, ProgressEvent
from hepaudit.testing import check_explainer, tiny_audit

BUILTINS = {
    "dauc": {}, "mad": {"iqr_clip": True}, "shap": {"jets": 12, "method": "permutation", "samples": 32},
    "lrp": {}, "gradient": {"method": "integrated_gradients", "steps": 4}, "nap": {}, "latent": {},
    "ood_ae": {}, "ood_ensemble": {"members": ["model.onnx"], "include_audited": True}, "calibration": {},
}


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_audit(tmp_path_factory.mktemp("shape"), BUILTINS, n=480)


# -- the merge tree ----------------------------------------------------------------------------

def _dask_grouping(n: int, split_every: int) -> str:
    level = [str(i) for i in range(n)]
    for groups in tree_levels(n, split_every):
        level = [level[a] if b - a == 1 else "(" + " ".join(level[a:b]) + ")" for a, b in groups]
    return level[0]


@pytest.mark.parametrize("split_every", [2, 3, 4, 5])
def test_merge_tree_groups_as_the_dask_reduction(split_every: int) -> None:
    """Fed one node at a time, the tree merges exactly the groups Dask's levels merge."""
    for n in range(1, 41):
        tree: MergeTree[str] = MergeTree(lambda nodes: "(" + " ".join(nodes) + ")", split_every)
        for i in range(n):
            tree.push(str(i))
        assert tree.result() == _dask_grouping(n, split_every), n
    assert MergeTree(lambda nodes: nodes[0]).result() is None


# -- check_explainer ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_check_explainer_passes_for_every_builtin(config: Path, name: str) -> None:
    runs = check_explainer(config, name)
    assert runs.results["whole"].status == "ok"
    assert len(runs.per_jet["tree"]["hepaudit/entry"]) == 480


@dataclass
class SumState:
    n: int = 0
    total: float = 0.0


class ForgetfulSum(Explainer[SumState]):
    """Sums the scores, but its merge keeps the left side only (the bug LRP's profiles had)."""

    name = "forgetful"

    def start(self) -> SumState:
        return SumState()

    def update(self, state: SumState, chunk: Chunk) -> SumState:
        return SumState(state.n + len(chunk), state.total + float(chunk.score.sum()))

    def merge(self, a: SumState, b: SumState) -> SumState:
        return a

    def finish(self, state: SumState) -> ExplainerResult:
        return self.result(feature_importance=[FeatureScore("all", state.total)], fields={"jets": state.n})


class ForgetfulPlugin:
    @hookimpl
    def hepaudit_register_explainers(self, register: object) -> None:
        register(ForgetfulSum)  # type: ignore[operator]


def test_check_explainer_catches_a_merge_that_loses_jets(config: Path) -> None:
    with pytest.raises(AssertionError) as info:
        check_explainer(config, "forgetful", plugins=[("forgetful", ForgetfulPlugin())])
    assert "forgetful" in str(info.value) and "fields.jets" in str(info.value)


def test_a_merge_error_fails_that_explainer_only(config: Path) -> None:
    class Raising(ForgetfulSum):
        name = "raising"

        def merge(self, a: SumState, b: SumState) -> SumState:
            raise ValueError("cannot merge")

    class Plugin:
        @hookimpl
        def hepaudit_register_explainers(self, register: object) -> None:
            register(Raising)  # type: ignore[operator]

    base = apply_overrides(config)
    several = replace(base, execution=replace(base.execution, partition_size=100))  # 5 partitions: merges run
    report = hepaudit.audit(several, out=None, explainers=["raising", "dauc"], plugins=[("raising", Plugin())])
    assert report.explainers["raising"].status == "failed"
    assert "cannot merge" in (report.explainers["raising"].error or "")
    assert report.explainers["dauc"].status == "ok"


# -- progress and cancellation -----------------------------------------------------------------

def test_progress_events_cover_every_jet(config: Path) -> None:
    events: list[ProgressEvent] = []
    hepaudit.audit(config, out=None, explainers=["dauc", "ood_ae"], on_progress=events.append)
    phases = {e.phase for e in events}
    assert {"input means", "auditing"} <= phases and any(p.startswith("reference") for p in phases)
    final = [e for e in events if e.phase == "auditing" and e.finished]
    assert len(final) == 1 and final[0].done == final[0].total == 480
    steps = [e.done for e in events if e.phase == "auditing"]
    assert steps == sorted(steps) and len(set(steps)) > 2  # it advanced chunk by chunk


def test_cancel_stops_the_run_and_leaves_no_report(config: Path, tmp_path: Path) -> None:
    cancel = threading.Event()

    def on_progress(event: ProgressEvent) -> None:
        if event.phase == "auditing" and event.done > 0:
            cancel.set()  # as the service would, from another thread

    out = tmp_path / "cancelled"
    with pytest.raises(AuditCancelled):
        hepaudit.audit(config, out=out, explainers=["dauc"], on_progress=on_progress, cancel=cancel)
    assert not out.exists()  # nothing was published
    assert [p.name for p in tmp_path.iterdir()] == []  # and the staging folder (per-jet file, figures) is gone


# -- the plugin surface ------------------------------------------------------------------------

def test_import_hepaudit_loads_no_heavy_module() -> None:
    code = ("import sys, hepaudit, hepaudit.api; "
            "print(sorted(m for m in ('onnxruntime', 'onnx', 'uproot', 'awkward', 'matplotlib', 'jinja2', 'numpy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_api_name_resolves() -> None:
    import hepaudit.api as api

    for name in api.__all__:
        assert getattr(api, name) is not None, name
    for name in hepaudit.__all__:
        assert getattr(hepaudit, name) is not None, name
    assert callable(hepaudit.audit) and hepaudit.hookimpl is api.hookimpl


def _host_with(plugin: object) -> PluginHost:
    host = PluginHost(entry_points=False, extra=[("probe", plugin)])
    host.explainers()
    return host


def test_registration_hook_may_take_no_arguments() -> None:
    called = []

    class NoArgs:
        @hookimpl
        def hepaudit_register_explainers(self) -> None:
            called.append(True)

    _host_with(NoArgs())
    assert called == [True]


@pytest.mark.parametrize("needs,message", [
    (frozenset({"label"}), "needs 'label', which hepaudit does not provide (close matches: labels)"),
    (frozenset({"input_means"}), "close matches: input_mean"),
    ("labels", "needs must be a set of names"),
])
def test_needs_are_validated_at_registration(needs: object, message: str) -> None:
    class Typo(ForgetfulSum):
        name = "typo"

    Typo.needs = needs  # type: ignore[assignment]

    class Plugin:
        @hookimpl
        def hepaudit_register_explainers(self, register: object) -> None:
            register(Typo)  # type: ignore[operator]

    host = _host_with(Plugin())  # the plugin is reported and left out; hepaudit runs on
    assert "typo" not in host.explainers().classes and "dauc" in host.explainers().classes
    (problem,) = host.problems
    assert message in problem and problem.startswith("plugin probe raised in hepaudit_register_explainers")


def test_options_must_be_a_dataclass() -> None:
    class NotData(ForgetfulSum):
        name = "notdata"
        Options = dict  # type: ignore[assignment]

    class Plugin:
        @hookimpl
        def hepaudit_register_explainers(self, register: object) -> None:
            register(NotData)  # type: ignore[operator]

    (problem,) = _host_with(Plugin()).problems
    assert "Options must be a dataclass" in problem


def test_feature_range_bins_are_those_of_the_x_pass(config: Path) -> None:
    """LRP's profiles bin every feature in mean ± 3σ of the x̄ pass, clipped to the largest |x|."""
    import uproot

    report = hepaudit.audit(config, out=None, explainers=["lrp"])
    profiles = report.explainers["lrp"].fields["profiles"]
    with uproot.open(config.parent / "jets.root") as handle:
        columns = handle["jets"].arrays(library="np")
    for name, profile in profiles.items():
        x = columns[name].astype(np.float64)
        lo = max(x.mean() - 3 * x.std(), -np.abs(x).max())
        hi = min(x.mean() + 3 * x.std(), np.abs(x).max())
        np.testing.assert_allclose([profile["bin_edges"][0], profile["bin_edges"][-1]], [lo, hi], rtol=1e-6)


def test_agreement_compares_only_explainers_that_declare_attribution(config: Path) -> None:
    class Ranked(ForgetfulSum):
        name = "ranked"
        attribution = True

        def finish(self, state: object) -> object:  # ranks the model's features (agreement needs ≥ 2 in common)
            return self.result(feature_importance=[FeatureScore(f, float(i)) for i, f in
                                                   enumerate(self.context.features)])

    class Plugin:
        @hookimpl
        def hepaudit_register_explainers(self, register: object) -> None:
            register(ForgetfulSum)  # type: ignore[operator]
            register(Ranked)  # type: ignore[operator]

    report = hepaudit.audit(config, out=None, explainers=["dauc", "forgetful", "ranked"],
                            plugins=[("probe", Plugin())])
    pairs = {frozenset((a.a, a.b)) for a in report.agreement}
    assert pairs == {frozenset(("dauc", "ranked"))}  # forgetful ranks one "feature" but is no attribution


def test_plugins_all_describes_each_explainer() -> None:
    import json

    from conftest import run_cli

    out = run_cli("plugins", "--all", "--json")
    assert out.returncode == 0, out.stderr
    details = {name: d for p in json.loads(out.stdout) for name, d in p["explainer_details"].items()}
    assert details["dauc"] == {"description": details["dauc"]["description"], "attribution": True,
                               "needs": ["input_mean", "labels"]}
    assert details["nap"]["attribution"] is False and "NAP" in details["nap"]["description"]
    text = run_cli("plugins", "--all").stdout
    assert "lrp: Layer-wise relevance propagation" in text and "(ranks features; needs input_mean)" in text
