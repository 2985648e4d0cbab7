"""The report writer: strict report.json, real PNG figures, a self-contained escaped report.html."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

from hepaudit.report import atomic_write, render_html, report_json, write_report
from hepaudit.report.figures import importance_bar_chart, ranking_comparison, score_distribution
from hepaudit.results import (
    Agreement,
    AuditReport,
    ExplainerResult,
    FeatureScore,
    Figure,
    GateOutcome,
    ReportSection,
    sorted_scores,
)

EVIL = "<script>alert(1)</script>"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAILED_ERROR = "ValueError: LRP cannot pass through op 'Einsum' (node 'mix/einsum_3')"


def _scores(features: list[str], values: np.ndarray, per_class: bool) -> list[FeatureScore]:
    out = []
    for i, (f, v) in enumerate(zip(features, values, strict=True)):
        sig = float(v * 1.2) if per_class else None
        bkg = float(v * 0.7 + 0.001 * i) if per_class else None
        out.append(FeatureScore(f, float(v), sig, bkg))
    return sorted_scores(out)


def _plot_figure() -> bytes:
    return score_distribution(np.linspace(0.3, 1.0, 200), np.linspace(0.0, 0.6, 300))


def make_report() -> AuditReport:
    features = [f"{v}_{i}" for i in range(10) for v in ("pt", "eta", "phi")] + [EVIL]
    rng = np.random.default_rng(7)
    n = len(features)
    dauc = ExplainerResult(
        name="dauc", plugin={"name": "hepaudit", "version": "0.1.0"}, runtime_s=1.25,
        options={"baseline": "mean"},
        feature_importance=_scores(features, rng.uniform(0, 0.05, n), per_class=False),
        group_importance=_scores([f"particle_{i}" for i in range(10)], rng.uniform(0, 0.1, 10), False),
        fields={"baseline_auc": np.float64(0.9312), "definition": "AUC(f(x)) - AUC(f(x\\k))",
                "forward_passes_per_jet": np.int64(42)},
        summary="Baseline AUC 0.9312.",
    )
    # A NaN inside a per-class score: must come out as null plus a warning.
    dauc.feature_importance[3].score_signal = float("nan")
    mad = ExplainerResult(
        name="mad", runtime_s=0.5, options={"target": "probability"},
        feature_importance=_scores(features, rng.uniform(0, 0.2, n), per_class=True),
        fields={"target": "probability", "per_layer": np.arange(3, dtype=np.float32)},
        summary="Mean |Δf| when a feature is set to its mean.",
    )
    shap = ExplainerResult(
        name="shap", runtime_s=3.0,
        feature_importance=_scores(features, rng.uniform(0, 0.1, n), per_class=True),
        fields={"base_value": 0.41, "exact": False, "additivity_max_abs_error": float("inf")},
        figures=[Figure("shap_beeswarm.png", "SHAP values per jet", _plot_figure())],
    )
    lrp = ExplainerResult(name="lrp", status="failed", error=FAILED_ERROR, runtime_s=0.01)
    ood = ExplainerResult(name="ood_ae", status="skipped", error="no [reference] configured")
    section = ReportSection(
        key="example_plugin", title="Example plugin section", text=f"Plugin says {EVIL}\nsecond line",
        data={"answer": 42, "ratio": np.float32(0.5)},
        figures=[Figure("example_plugin.png", "A plugin figure", _plot_figure())],
    )
    return AuditReport(
        hepaudit_version="0.1.0", created="2025-01-01T12:00:00+00:00",
        config={"source": "/tmp/audit.toml", "model": {"path": "/tmp/model.onnx"}},
        model={"path": "/tmp/model.onnx", "sha256": "ab" * 32, "opset": 17, "producer": "pytorch 2.3",
               "inputs": [{"name": "x", "shape": [None, 90], "dtype": "float32"}],
               "outputs": [{"name": "prob", "shape": ["batch", 1], "dtype": "float32"}],
               "score": {"output": "prob", "kind": "column", "column": 0, "head": "Sigmoid"},
               "op_counts": {"Gemm": 5, "Relu": 4, "Sigmoid": 1}, "n_parameters": 40000},
        data={"files": [{"path": "/tmp/jets.root", "entries": 1000}], "tree": "jets",
              "n_jets": 1000, "n_signal": 480, "n_background": 520},
        features=features,
        explainers={"dauc": dauc, "mad": mad, "shap": shap, "lrp": lrp, "ood_ae": ood},
        agreement=[Agreement("dauc", "mad", 0.41, 0.6), Agreement("dauc", "shap", float("nan"), 0.5),
                   Agreement("mad", "shap", 0.2, 0.4)],
        warnings=["inputs pt_0 and pt_1 are 97% correlated"],
        timing={"total_s": 5.0},
        sections=[section],
        gates=[GateOutcome("dauc.baseline_auc", 0.9312, 0.9, None, True, "dauc.baseline_auc = 0.93 >= 0.9")],
    )


def _reject_constant(name: str) -> None:
    raise AssertionError(f"report.json contains {name}")


@pytest.fixture()
def written(tmp_path: Path) -> tuple[AuditReport, Path]:
    report = make_report()
    write_report(report, tmp_path)
    return report, tmp_path


def test_report_json_is_strict_and_nan_becomes_null(written: tuple[AuditReport, Path]) -> None:
    report, out = written
    text = (out / "report.json").read_text()
    doc = json.loads(text, parse_constant=_reject_constant)
    assert doc["schema_version"] == 1
    assert list(doc)[:3] == ["schema_version", "hepaudit_version", "created"]
    dauc = doc["explainers"]["dauc"]
    assert dauc["feature_importance"][3]["score_signal"] is None
    assert dauc["baseline_auc"] == pytest.approx(0.9312)
    assert dauc["forward_passes_per_jet"] == 42 and isinstance(dauc["forward_passes_per_jet"], int)
    assert doc["explainers"]["mad"]["per_layer"] == [0.0, 1.0, 2.0]
    assert doc["explainers"]["shap"]["additivity_max_abs_error"] is None
    assert doc["agreement"][1]["kendall_tau"] is None
    warnings = doc["warnings"]
    assert "explainers.dauc.feature_importance[3].score_signal was NaN; written as null" in warnings
    assert "explainers.shap.additivity_max_abs_error was inf; written as null" in warnings
    assert "agreement[1].kendall_tau was NaN; written as null" in warnings
    assert warnings[0] == "inputs pt_0 and pt_1 are 97% correlated"  # the report's own come first
    assert doc["sections"]["example_plugin"]["ratio"] == 0.5
    assert doc["explainers"]["lrp"]["status"] == "failed"
    assert doc["explainers"]["lrp"]["error"] == FAILED_ERROR
    # The same report serialises to the same text: deterministic key order.
    assert report_json(report) == text


def test_figures_are_real_pngs_and_listed_in_json(written: tuple[AuditReport, Path]) -> None:
    import matplotlib.image

    _, out = written
    doc = json.loads((out / "report.json").read_text())
    expected = {
        "dauc": {"dauc_importance.png", "dauc_groups.png"},
        "mad": {"mad_importance.png"},
        "shap": {"shap_importance.png", "shap_beeswarm.png"},
    }
    for name, files in expected.items():
        assert set(doc["explainers"][name]["figures"]) == {f"figures/{f}" for f in files}
    assert "figures" not in doc["explainers"]["lrp"]
    all_files = set().union(*expected.values()) | {"ranking_comparison.png", "example_plugin.png"}
    assert {p.name for p in (out / "figures").iterdir()} == all_files
    for file_name in all_files:
        path = out / "figures" / file_name
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC
        assert len(data) < 200_000, f"{file_name} is {len(data)} bytes"
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert float(np.std(image)) > 0.01  # not a blank canvas


def test_html_is_self_contained_complete_and_escaped(written: tuple[AuditReport, Path]) -> None:
    report, out = written
    html = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"<link\b|<script\b|@import|url\(", html, re.I)
    sources = re.findall(r'<img src="([^"]*)"', html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    # every generated and explainer/plugin figure is embedded (shap has 2, dauc 2, mad 1, + ranking, + plugin)
    assert len(sources) == 7
    for name in report.explainers:
        assert f"<h2>{name} " in html
    # the failed explainer's error is shown, escaped (it contains quotes)
    assert "LRP cannot pass through op &#39;Einsum&#39; (node &#39;mix/einsum_3&#39;)" in html
    assert "no [reference] configured" in html
    assert EVIL not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Kendall τ" in html and "0.410" in html
    assert "Example plugin section" in html
    assert "inputs pt_0 and pt_1 are 97% correlated" in html
    assert "was NaN; written as null" in html


def test_ranking_table_lists_each_method_in_rank_order(written: tuple[AuditReport, Path]) -> None:
    report, out = written
    html = (out / "report.html").read_text()
    section = html[html.index('id="comparison"'):]
    table = section[: section.index("</table>")]
    header = re.findall(r"<th>([^<]*)</th>", table)
    assert header == ["dauc", "mad", "shap"]  # failed and skipped explainers are not ranked
    rows = re.findall(r"<tr><td class=\"num\">(\d+)</td>(.*?)</tr>", table, re.S)
    assert len(rows) == 15
    second = re.findall(r"<code>(.*?)</code>", rows[1][1])
    expected = [report.explainers[m].feature_importance[1].feature for m in header]
    assert second == [f.replace("<", "&lt;").replace(">", "&gt;") for f in expected]


def test_html_gives_group_scores_notes_and_only_the_methods_that_ran(written: tuple[AuditReport, Path]) -> None:
    report, out = written
    html = (out / "report.html").read_text()
    dauc = html[html.index('id="explainer-1"'):html.index('id="explainer-2"')]
    groups = dauc[dauc.index("Groups of features"):]
    groups = groups[: groups.index("</table>")]
    rows = re.findall(r"<code>(particle_\d+)</code></td><td class=\"num\">([^<]*)</td>", groups)
    expected = sorted_scores(report.explainers["dauc"].group_importance or [])
    assert [r[0] for r in rows] == [s.feature for s in expected]
    assert [float(r[1]) for r in rows] == pytest.approx([s.score for s in expected], abs=6e-5)

    why = html[html.index("Why the methods can disagree"):]
    why = why[: why.index("</section>")]
    assert "ΔAUC asks" in why and "MAD is" in why and "SHAP splits" in why
    assert "LRP redistributes" not in why and "Gradient methods" not in why  # lrp failed, gradient absent


def test_a_long_text_field_is_a_note_under_the_table(tmp_path: Path) -> None:
    report = make_report()
    note = "no reference sample: the audited data is its own reference, " * 3
    report.explainers["mad"].fields["note"] = note
    html = render_html(report, {})
    mad = html[html.index('id="explainer-2"'):html.index('id="explainer-3"')]
    table = mad[mad.index("<h3>Results</h3>"):mad.index("</table>")]
    assert "no reference sample" not in table and "<th>target</th>" in table
    assert f'<p class="note"><strong>note</strong>: {note}' in mad


def test_no_temporary_files_left(written: tuple[AuditReport, Path]) -> None:
    _, out = written
    leftovers = [p for p in out.rglob("*") if ".tmp" in p.name or p.name.startswith(".")]
    assert leftovers == []
    assert {p.name for p in out.iterdir()} == {"figures", "report.json", "report.html"}


def test_writing_twice_does_not_duplicate_figures(tmp_path: Path) -> None:
    report = make_report()
    write_report(report, tmp_path)
    write_report(report, tmp_path)
    doc = json.loads((tmp_path / "report.json").read_text())
    figures = doc["explainers"]["dauc"]["figures"]
    assert len(figures) == len(set(figures)) == 2


def test_atomic_write_replaces_content(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    atomic_write(path, "first version, rather long\n")
    atomic_write(path, b"second")
    assert path.read_bytes() == b"second"
    atomic_write(path, "drítt ✓")
    assert path.read_text(encoding="utf-8") == "drítt ✓"
    assert os.listdir(tmp_path) == ["out.json"]


def test_atomic_write_leaves_old_file_when_interrupted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "report.json"
    atomic_write(path, "old")

    def crash(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, "new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["report.json"]


def test_failing_figure_becomes_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hepaudit.report.writer as writer

    def broken(result: ExplainerResult) -> bytes:
        raise RuntimeError("renderer exploded")

    monkeypatch.setattr(writer, "importance_bar_chart", broken)
    report = make_report()
    write_report(report, tmp_path)
    doc = json.loads((tmp_path / "report.json").read_text())
    assert any("dauc_importance.png could not be drawn" in w and "renderer exploded" in w
               for w in doc["warnings"])
    assert (tmp_path / "report.html").exists()
    assert (tmp_path / "figures" / "dauc_groups.png").exists()
    assert not (tmp_path / "figures" / "dauc_importance.png").exists()


def test_figure_helpers_on_edge_cases() -> None:
    report = make_report()
    assert importance_bar_chart(report.explainers["lrp"]) is None
    png = importance_bar_chart(report.explainers["mad"], top=5)
    assert png is not None and png[:8] == PNG_MAGIC
    only_one = make_report()
    only_one.explainers = {"dauc": only_one.explainers["dauc"]}
    assert ranking_comparison(only_one) is None
    # A report with a single method renders without a comparison section.
    html = render_html(only_one, {})
    assert 'id="comparison"' not in html


def test_report_json_numpy_and_non_finite_inputs() -> None:
    report = make_report()
    report.timing = {"total_s": np.float32(2.5), "read_s": -math.inf, "shape": (np.int32(3), 4)}
    doc = json.loads(report_json(report), parse_constant=_reject_constant)
    assert doc["timing"] == {"total_s": 2.5, "read_s": None, "shape": [3, 4]}
    assert "timing.read_s was -inf; written as null" in doc["warnings"]


def test_minimal_report_renders(tmp_path: Path) -> None:
    report = AuditReport(hepaudit_version="0.1.0", created="2025-01-01T00:00:00Z", config={}, model={},
                         data={}, features=[], explainers={})
    write_report(report, tmp_path)
    doc = json.loads((tmp_path / "report.json").read_text(), parse_constant=_reject_constant)
    assert doc["explainers"] == {} and doc["warnings"] == []
    html = (tmp_path / "report.html").read_text()
    assert "<h2>Summary</h2>" in html and "<img" not in html
    assert list((tmp_path / "figures").iterdir()) == []


def test_agreement_compares_groups_with_groups(tmp_path: Path) -> None:
    """SHAP over variable groups is compared with ΔAUC's variable groups (same order: τ = 1),
    never with per-feature rankings (which used to give top-10 overlap 0)."""
    examples = Path(__file__).resolve().parents[1] / "examples"
    text = (examples / "audit_topodnn.toml").read_text()
    text = text.replace('path = "models/', f'path = "{examples}/models/').replace(
        'files = ["data/', f'files = ["{examples}/data/')
    head = text[:text.index("[explainers.")]
    config = tmp_path / "agree.toml"
    config.write_text(head + '[explainers.dauc]\ngroups = ["feature"]\n[explainers.mad]\n'
                      '[explainers.shap]\ngroups = "feature"\njets = 10\n')
    from hepaudit import audit

    report = audit(config, out=None, max_jets=400)
    pairs = {(a.a, a.b, a.units): a for a in report.agreement}
    assert ("dauc", "shap", "groups") in pairs and pairs[("dauc", "shap", "groups")].n_common == 3
    assert not any(a.units == "features" and "shap" in (a.a, a.b) for a in report.agreement)
    assert ("dauc", "mad", "features") in pairs and pairs[("dauc", "mad", "features")].n_common == 90
