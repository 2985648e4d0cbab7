"""The report from a finished run: results, warnings, figures, agreement, sections, gates, timing.

:func:`collect_results` turns each explainer's run into its result (or a skipped / failed
one), :func:`write_trees` hands their per-jet trees to the writer, :func:`draw_all` draws
every figure (:mod:`.drawing`: helpers beside this process), and :func:`assemble` builds the
:class:`~hepaudit.results.AuditReport` around them.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Collection
from typing import TYPE_CHECKING

import numpy as np

from hepaudit import __version__
from hepaudit.bootstrap import centred_interval
from hepaudit.executors.partitions import LOGIT_BINS, SCORE_BINS
from hepaudit.gates import evaluate_gates
from hepaudit.metrics import kendall_tau, top_k_overlap
from hepaudit.options import as_table
from hepaudit.report.drawing import add_figure, drawn_later
from hepaudit.report.figures import RANKING_FIGURE, attribution_rankings, rank_heat_map
from hepaudit.report.findings import findings
from hepaudit.report.performance import inputs_section, performance_section
from hepaudit.results import Agreement, AuditReport, ExplainerResult, FeatureScore, Figure, ReportSection

if TYPE_CHECKING:  # pragma: no cover
    from hepaudit.executors.local import Outcome
    from hepaudit.report.drawing import FigurePool, Job
    from hepaudit.report.per_jet import PerJetSink
    from hepaudit.run.plan import AuditPlan


def run_warnings(plan: AuditPlan, outcome: Outcome) -> list[tuple[str, str]]:
    """Add the run's own warnings to the plan's; the files left out, as (path, reason)."""
    plan.warnings += outcome.warnings
    listed = {p for p, _ in plan.sample.skipped}
    skipped = plan.sample.skipped + [s for s in outcome.skipped if s[0] not in listed]
    for _path, reason in skipped:
        plan.warnings.append(f"skipped an unreadable file (execution.skip_corrupt = true): {reason}")
    if outcome.n_dropped:
        plan.warnings.append(f"{outcome.n_dropped} jets with NaN/inf inputs, weights or scores were left out "
                             "(data.nonfinite = \"drop\"); per_jet.root lists the audited jets' entry numbers in "
                             "`entry`")
    return skipped


def collect_results(plan: AuditPlan) -> dict[str, ExplainerResult]:
    """Every explainer's result in report order."""
    results: dict[str, ExplainerResult] = {}
    runs = {r.name: r for r in plan.runs}
    for name in plan.names:
        options = as_table(plan.options[name])
        if name in plan.skipped:
            results[name] = ExplainerResult(name=name, status="skipped", error=plan.skipped[name],
                                            plugin=plan.host.plugin_of(name), options=options)
            continue
        run = runs[name]
        if run.error is not None or run.result is None:
            result = ExplainerResult(name=name, status="failed", error=run.error or "no result", options=options)
        else:
            result = run.result
        result.plugin = run.plugin
        result.runtime_s = run.seconds
        results[name] = result
        plan.warnings.extend(f"{name}: {w}" for w in result.warnings)
    return results


def write_trees(results: dict[str, ExplainerResult], per_jet: PerJetSink) -> None:
    """The explainers' further per-jet trees (SHAP's, latent's) into ``per_jet``, which is then closed."""
    for result in results.values():
        for tree, columns in result.trees.items():
            per_jet.add_tree(tree, columns)
    per_jet.close()


def figure_jobs(plan: AuditPlan, results: dict[str, ExplainerResult]) -> list[Job]:
    """Each explainer's ``draw(result)``, and, when the report is written, each ranking's bar
    charts (:func:`~hepaudit.report.writer.chart_jobs`): jobs for the pool.

    After every explainer has finished: drawing is the report's work, not the pass over the
    jets, and on Dask it happens here on the client, not on the worker that finished."""
    from hepaudit.report.drawing import explainer_job
    from hepaudit.report.writer import chart_jobs

    jobs: list[Job] = []
    for run in plan.runs:
        result = results.get(run.name)
        if run.explainer is not None and result is not None and result.status == "ok":
            jobs.append(explainer_job(run.name, run.explainer, result))
    if plan.context.output_dir is not None:
        jobs += [job for name, result in results.items() for job in chart_jobs(name, result)]
    return jobs


def draw_all(plan: AuditPlan, pool: FigurePool, jobs: list[Job]) -> None:
    """Draw ``jobs`` and whatever ``pool`` still holds (its helpers beside this process,
    ``[report] figure_processes``), and put every figure in place."""
    from hepaudit.report.drawing import settle

    for job, outcome in zip(pool.jobs + jobs, pool.draw(jobs)):
        problem = settle(job, outcome)
        if problem:
            plan.warnings.append(problem)


def figure_pool(plan: AuditPlan) -> FigurePool:
    """The helpers that will draw beside this process (``[report] figure_processes``): those the
    audit started when it began (``plan.figure_helpers``), or started now, so that their
    start-up overlaps collecting the results and writing per_jet.root."""
    from hepaudit.report.drawing import FigurePool, helpers_for

    report = plan.config.report
    finished = sum(1 for run in plan.runs if run.explainer is not None and run.error is None)
    # each explainer draws, and when the report is written its rankings get bar charts too;
    # the report's sections draw their own three
    jobs = finished * (3 if plan.context.output_dir is not None else 1) + 3
    return FigurePool(helpers_for(report.figure_processes, jobs), report.figure_formats, report.dpi,
                      started=plan.figure_helpers, style=report.style)


def rankings(result: ExplainerResult) -> dict[str, list[FeatureScore]]:
    """A result's rankings by unit: ``features`` and ``groups`` (SHAP whose players are groups
    ranks groups in its feature_importance)."""
    out: dict[str, list[FeatureScore]] = {}
    grouped = result.fields.get("players") == "groups"
    if result.feature_importance:
        out["groups" if grouped else "features"] = result.feature_importance
    if result.group_importance and not grouped:
        out["groups"] = result.group_importance
    return out


def agreement(results: dict[str, ExplainerResult], attribution: Collection[str] | None = None) -> list[Agreement]:
    """Kendall τ and top-10 overlap of every pair of rankings of the same units (features with
    features, groups with groups), over the units both rank (of the explainers in
    ``attribution``, those whose class declares ``attribution = True``; None: every ranking)."""
    ranked = {n: rankings(r) for n, r in results.items()
              if r.status == "ok" and (attribution is None or n in attribution)}
    names = [n for n in ranked if ranked[n]]
    out = []
    noise_of: dict[tuple[str, str, tuple[str, ...]], tuple[float, float] | None] = {}

    def noise(name: str, units: str, common: list[str]) -> tuple[float, float] | None:
        key = (name, units, tuple(common))  # most pairs share their units: one computation each
        if key not in noise_of:
            noise_of[key] = _self_agreement(results[name], units, common)
        return noise_of[key]

    for units in ("features", "groups"):
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if units not in ranked[a] or units not in ranked[b]:
                    continue
                sa = {s.feature: s.score for s in ranked[a][units]}
                sb = {s.feature: s.score for s in ranked[b][units]}
                common = [f for f in sa if f in sb]
                if len(common) < 2:
                    continue
                tau = kendall_tau(np.array([sa[f] for f in common]), np.array([sb[f] for f in common]))
                shared = set(common)
                overlap = top_k_overlap([s.feature for s in ranked[a][units] if s.feature in shared],
                                        [s.feature for s in ranked[b][units] if s.feature in shared])
                ci = _tau_interval(results[a], results[b], units, common, tau)
                levels = [noise(n, units, common) for n in (a, b)]
                noise_tau = min((x[0] for x in levels if x is not None), default=None)
                noise_overlap = min((x[1] for x in levels if x is not None), default=None)
                within = None
                if noise_tau is not None and noise_overlap is not None and np.isfinite(tau):
                    high = ci[1] if ci else tau
                    within = bool(high >= noise_tau or overlap >= noise_overlap)
                out.append(Agreement(a, b, None if np.isnan(tau) else tau, None if np.isnan(overlap) else overlap,
                                     units, len(common), ci, noise_tau, noise_overlap, within))
    return out


def _self_agreement(result: ExplainerResult, units: str, common: list[str]) -> tuple[float, float] | None:
    """How well one method agrees with itself on resampled jets: the median Kendall τ and the
    2.5th percentile of the top-10 overlap between pairs of its bootstrap replicates (two
    independent resamples each), over the ``common`` units. A cross-method τ or overlap that
    reaches it is a difference the method's own noise makes."""
    rep = next((r for r in result.replicates if r.units == units), None)
    if rep is None or len(rep.values) < 4 or len(common) > TAU_INTERVAL_UNITS:
        return None
    index = [rep.names.index(n) for n in common]
    values = [np.asarray(v)[index] for v in rep.values]
    taus, overlaps = [], []
    for x, y in zip(values[0::2], values[1::2]):
        taus.append(kendall_tau(x, y))
        overlaps.append(top_k_overlap([common[i] for i in np.argsort(-x, kind="stable")],
                                      [common[i] for i in np.argsort(-y, kind="stable")]))
    taus_ok = [t for t in taus if np.isfinite(t)]
    if not taus_ok:
        return None
    return float(np.median(taus_ok)), float(np.percentile(overlaps, 2.5))


#: above this many common units the bootstrap interval of τ is not computed (O(units²) a replicate)
TAU_INTERVAL_UNITS = 1000


def _tau_interval(a: ExplainerResult, b: ExplainerResult, units: str, common: list[str],
                  tau: float) -> list[float] | None:
    """The 95 % interval of Kendall τ (``tau``, the sample's) from the replicates both rankings
    have (the same jets' weights)."""
    ra = next((r for r in a.replicates if r.units == units), None)
    rb = next((r for r in b.replicates if r.units == units), None)
    if ra is None or rb is None or len(ra.values) != len(rb.values) or len(common) > TAU_INTERVAL_UNITS:
        return None
    ia = [ra.names.index(n) for n in common]
    ib = [rb.names.index(n) for n in common]
    return centred_interval(tau, np.array([kendall_tau(x[ia], y[ib]) for x, y in zip(ra.values, rb.values)]))



def score_section(hist: np.ndarray, edges: np.ndarray) -> ReportSection:
    """The tagger's score distribution per class, from the executor's histograms."""
    from hepaudit.report.figures import score_histograms

    bkg, sig, other = hist
    centres = 0.5 * (edges[1:] + edges[:-1])
    data = {"bin_edges": edges.tolist(), "signal": sig.tolist(), "background": bkg.tolist()}
    text_parts = []
    for name, counts in (("signal", sig), ("background", bkg), ("unlabelled", other)):
        if counts.sum():
            text_parts.append(f"mean score of {name} jets {float((counts * centres).sum() / counts.sum()):.3f}")
    figures: list[Figure] = []
    add_figure(figures, "score_distribution.png", "Tagger score per class", score_histograms, edges,
               sig if sig.sum() else None, bkg if bkg.sum() else None, other if other.sum() else None)
    return ReportSection("score", "Tagger score", "; ".join(text_parts) + ".", data, figures)


def _report(plan: AuditPlan, outcome: Outcome, results: dict[str, ExplainerResult], per_jet: PerJetSink | None,
            skipped: list[tuple[str, str]], n_sig: int, n_bkg: int) -> AuditReport:
    """The report around the results: the model, the data, the agreement (no sections yet)."""
    cfg = plan.config
    left_out = {p for p, _ in outcome.skipped}
    return AuditReport(
        hepaudit_version=__version__,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        config=as_table(cfg),
        model={**plan.tagger.info.to_dict(), "score": plan.tagger.score_spec.describe(),
               "providers": plan.tagger.providers},
        data={"files": [f for f in plan.sample.summary() if f["path"] not in left_out],
              "skipped_files": [p for p, _ in skipped] or None, "tree": cfg.data.tree,
              "n_jets": outcome.n_jets, "n_signal": n_sig, "n_background": n_bkg, "label": cfg.data.label,
              "weight": cfg.data.weight, "reference": plan.reference.summary() if plan.reference else None},
        features=plan.builder.features,
        explainers=results,
        agreement=agreement(results, {n for n, c in plan.classes.items() if c.attribution}),
        per_jet_file="per_jet.root" if per_jet is not None and per_jet.entries else None,
        warnings=plan.warnings,
        groups={g: [plan.builder.features[k] for k in ks] for g, ks in plan.builder.groups().items()},
        output_dir=str(plan.context.output_dir) if plan.context.output_dir else None,
    )


def _sections(plan: AuditPlan, outcome: Outcome, results: dict[str, ExplainerResult]) -> list[ReportSection]:
    """The tagger's score, its performance and the leading inputs, from the executor's histograms."""
    performance = performance_section(outcome.logit_hist, LOGIT_BINS, outcome.logit_boot)
    rankings = [[s.feature for s in r.feature_importance] for r in results.values()
                if r.status == "ok" and r.feature_importance and r.fields.get("players") != "groups"]
    inputs = inputs_section(outcome.input_hist, plan.context.feature_range, list(plan.context.features),
                            rankings)
    return [score_section(outcome.score_hist, SCORE_BINS)] + [s for s in (performance, inputs) if s]


def assemble(plan: AuditPlan, outcome: Outcome, per_jet: PerJetSink | None, timing: dict[str, float]
             ) -> AuditReport:
    """The report of a finished run; ``timing`` holds the phases timed so far (``total_s`` is
    the run's start, made a duration here)."""
    cfg = plan.config
    skipped = run_warnings(plan, outcome)
    n_sig, n_bkg = plan.context.n_signal, plan.context.n_background
    if outcome.skipped and cfg.data.label:  # files left out while auditing: count the audited jets' labels
        n_bkg, n_sig = int(outcome.score_hist[0].sum()), int(outcome.score_hist[1].sum())
    with figure_pool(plan) as pool:
        results = collect_results(plan)
        t0 = time.perf_counter()
        # the helpers draw the explainers' figures while this process writes the further trees
        # and builds the report; the sections' figures and the rank comparison join them after
        pool.submit(figure_jobs(plan, results))
        if per_jet is not None:
            write_trees(results, per_jet)
        report = _report(plan, outcome, results, per_jet, skipped, n_sig, n_bkg)
        with drawn_later() as later:  # the sections' figures, drawn in the pool with the rest
            sections = _sections(plan, outcome, results)
            if plan.context.output_dir is not None:
                add_figure(report._drawn, RANKING_FIGURE, "", rank_heat_map, attribution_rankings(report))
        draw_all(plan, pool, later)
        figures_s = time.perf_counter() - t0
    report.sections = sections + plan.host.report_sections(report)
    report.gates = evaluate_gates(cfg.gates, report)
    report.findings = findings(report, plan.checks, plan.input_facts)
    report.timing = {"total_s": time.perf_counter() - timing["total_s"], "read_s": outcome.read_s,
                     "chunks_read": outcome.chunks_read, "input_stats_s": timing.get("input_stats_s", 0.0),
                     "inference_s": plan.tagger.inference_s, **{f"{n}_s": r.runtime_s for n, r in results.items()},
                     "figures_s": figures_s}
    return report
