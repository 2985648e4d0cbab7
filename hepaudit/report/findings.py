"""The verdict at the top of the report: short statements, each with the numbers behind it.

Only what the numbers support is said: two methods "agree" or "disagree" only against their
own noise (the agreement table's ``within_noise``), a flagged fraction "differs" from the
reference only beyond the two binomial errors, a score is "miscalibrated" only when its ECE
is well above what a calibrated score would show on as many jets. Where no noise level is
known, the finding gives the number and draws no conclusion.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from hepaudit.data.stats import InputFacts
from hepaudit.guards import separation
from hepaudit.results import AuditReport, ExplainerResult, Finding, FindingLevel

#: how many leading features of each method count as its top
TOP = 5
#: an ECE above this multiple of a calibrated score's expected ECE is called miscalibration
ECE_NOISE_MULTIPLE = 3.0
_ORDER: dict[FindingLevel, int] = {"alert": 0, "warning": 1, "ok": 2, "info": 3}
#: methods whose raw relevance contains the model's mean behaviour (methods.md)
MEAN_BEHAVIOUR = frozenset({"lrp", "gradient"})
#: methods that split or move importance between correlated inputs
OCCLUSION_LIKE = frozenset({"dauc", "mad", "shap"})


def findings(report: AuditReport, checks: Sequence[Finding] = (), facts: InputFacts | None = None) -> list[Finding]:
    """Every finding of ``report``, alerts first; ``checks`` are the guards' own."""
    out: list[Finding] = list(checks)
    out += performance(report)
    out += sanity(report.explainers.get("sanity"))
    out += agreement(report, facts)
    for name in ("ood_ae", "ood_ensemble"):
        out += ood(name, report.explainers.get(name))
    out += calibration(report.explainers.get("calibration"))
    out += gates(report)
    # alerts, then the tagger's performance, then warnings, then the rest as found
    return sorted(out, key=lambda f: 0.5 if f.kind == "performance" and f.level != "alert" else min(_ORDER[f.level], 2))


def _ok(result: ExplainerResult | None) -> bool:
    return result is not None and result.status == "ok"


def _interval(ci: Sequence[float] | None, digits: int = 3) -> str:
    return f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else ""


def performance(report: AuditReport) -> list[Finding]:
    section = next((s for s in report.sections if s.key == "performance"), None)
    if section is None:
        dauc = report.explainers.get("dauc")
        if not _ok(dauc) or dauc is None:
            return []
        auc, ci = dauc.fields.get("baseline_auc"), None
        rejection: dict[str, Any] = {}
    else:
        auc, ci = section.data.get("auc"), section.data.get("auc_ci95")
        rejection = section.data.get("background_rejection") or {}
    if auc is None:
        return []
    numbers = {"auc": auc, "auc_ci95": ci, "background_rejection": rejection or None}
    alarm = separation(auc, ci)
    if alarm:
        return [Finding("performance", "alert", alarm[0].upper() + alarm[1:], numbers)]
    text = f"The tagger separates these jets: AUC {auc:.4f}{_interval(ci, 4)}"
    at_half = rejection.get("0.5")
    if at_half:
        text += f", background rejection 1/ε_B = {at_half:.3g} at 50 % signal efficiency"
    return [Finding("performance", "info", text + ".", numbers)]


def sanity(result: ExplainerResult | None) -> list[Finding]:
    if not _ok(result) or result is None:
        return []
    checked: dict[str, Any] = result.fields.get("explainers", {})
    threshold = result.fields.get("threshold", 0.5)
    out: list[Finding] = []

    def last(name: str) -> tuple[float, list[float] | None]:
        return checked[name]["spearman"][-1], checked[name]["spearman_ci95"][-1]

    def by(word: str) -> list[str]:
        return [n for n, e in checked.items() if e.get("verdict") == word]

    for name in by("failed"):
        rho, ci = last(name)
        out.append(Finding("sanity", "alert",
                           f"{name}'s ranking survives the randomisation of every layer (Spearman ρ = {rho:.2f}"
                           f"{_interval(ci, 2)} ≥ {threshold:g}): it reflects the inputs more than what the tagger "
                           "learnt; do not read it as an explanation of the model.",
                           {"explainer": name, "spearman": rho, "spearman_ci95": ci, "threshold": threshold}))
    unsure = by("inconclusive")
    if unsure:
        values = {n: last(n) for n in unsure}
        out.append(Finding("sanity", "warning", "Inconclusive sanity check: with every layer randomised "
                           + ", ".join(f"{n} ρ = {v[0]:.2f}{_interval(v[1], 2)}" for n, v in values.items())
                           + f", an interval that straddles the threshold {threshold:g}; check on more jets "
                           "(sanity.jets).",
                           {"spearman": {n: v[0] for n, v in values.items()}, "threshold": threshold}))
    passed = by("passed")
    if passed:
        values = {n: last(n) for n in passed}
        listed = ", ".join(f"{n} ρ = {v[0]:.2f}{_interval(v[1], 2)}" for n, v in values.items())
        out.append(Finding("sanity", "ok", f"{', '.join(passed)} change{'s' if len(passed) == 1 else ''} once the "
                           f"weights are randomised (with every layer randomised: {listed}; below {threshold:g}).",
                           {"spearman": {n: v[0] for n, v in values.items()}, "threshold": threshold}))
    return out


def _top_set(result: ExplainerResult) -> set[str]:
    """The method's top ``TOP`` features whose importance is above zero beyond noise (interval
    above 0; without an interval, a positive score)."""
    return {s.feature for s in (result.feature_importance or [])[:TOP]
            if (s.score_ci95[0] > 0 if s.score_ci95 else s.score > 0)}


def agreement(report: AuditReport, facts: InputFacts | None) -> list[Finding]:
    methods = {n: r for n, r in report.explainers.items()
               if _ok(r) and r.feature_importance and n != "sanity" and r.fields.get("players") != "groups"}
    if len(methods) < 2:
        return []
    out: list[Finding] = []
    tops = {n: _top_set(r) for n, r in methods.items()}
    common = set.intersection(*tops.values())
    rank = {n: {s.feature: i for i, s in enumerate(r.feature_importance or [])} for n, r in methods.items()}
    shared = sorted(common, key=lambda f: sum(rank[n][f] for n in methods))
    names = ", ".join(methods)
    if shared:
        out.append(Finding("agreement", "info",
                           f"{'Both' if len(methods) == 2 else 'All ' + str(len(methods))} methods ({names}) rank "
                           f"{', '.join(shared)} among their top {TOP}, "
                           "each with an importance whose 95 % interval excludes zero.",
                           {"features": shared, "methods": list(methods)}))
    else:
        out.append(Finding("agreement", "info", f"No feature is among the top {TOP} of every method ({names}).",
                           {"methods": list(methods)}))
    pairs = [a for a in report.agreement if a.units == "features" and a.a in methods and a.b in methods
             and a.kendall_tau is not None and a.noise_kendall_tau is not None]
    # agreement needs τ itself to reach the noise level: a top-10 overlap within noise alone does
    # not make two orderings the same (ΔAUC's top 10 is noisy when most features hardly matter)
    agree = [a for a in pairs if _high(a) >= (a.noise_kendall_tau or 0.0)]
    differ = [a for a in pairs if a not in agree]
    if agree:
        out.append(Finding("agreement", "ok", "Agree within their own noise: " + "; ".join(
            f"{a.a}–{a.b} Kendall τ = {a.kendall_tau:.2f}{_interval(a.kendall_tau_ci95, 2)} (noise "
            f"{a.noise_kendall_tau:.2f})" + _both_top(a.a, a.b, tops, rank) for a in agree) + ".",
            {"pairs": [[a.a, a.b] for a in agree]}))
    if differ:
        out.append(Finding("agreement", "warning", "Rank the features differently beyond their noise: " + "; ".join(
            f"{a.a}–{a.b} τ = {a.kendall_tau:.2f}{_interval(a.kendall_tau_ci95, 2)} (noise {a.noise_kendall_tau:.2f})"
            for a in differ) + ". Noise: the lower of the two methods' median τ between resamples of its own jets.",
            {"pairs": [{"a": a.a, "b": a.b, "kendall_tau": a.kendall_tau, "kendall_tau_ci95": a.kendall_tau_ci95,
                        "noise_kendall_tau": a.noise_kendall_tau} for a in differ]}))
        out += _why({n for a in differ for n in (a.a, a.b)}, methods, facts)
    return out


def _both_top(a: str, b: str, tops: dict[str, set[str]], rank: dict[str, dict[str, int]]) -> str:
    shared = sorted(tops[a] & tops[b], key=lambda f: rank[a][f] + rank[b][f])
    return f", both with {', '.join(shared)} in their top {TOP}" if shared else ""


def _high(a: Any) -> float:
    return float(a.kendall_tau_ci95[1]) if a.kendall_tau_ci95 else float(a.kendall_tau)


def _why(names: set[str], methods: dict[str, ExplainerResult], facts: InputFacts | None) -> list[Finding]:
    """Why methods that differ likely do, from what the audit measured (each reason once)."""
    out: list[Finding] = []
    dauc = methods.get("dauc")
    occlusion = {s.feature: s for s in dauc.feature_importance or []} if dauc is not None else {}
    for name in sorted(names & MEAN_BEHAVIOUR):
        top = (methods[name].feature_importance or [])[:TOP]
        idle = [s.feature for s in top if s.feature in occlusion and _contains_zero(occlusion[s.feature])]
        if idle:
            out.append(Finding("agreement", "info",
                               f"Why {name} differs: it ranks {', '.join(idle)} in its top {TOP}, yet occluding "
                               f"{'it' if len(idle) == 1 else 'them'} leaves the AUC unchanged (ΔAUC compatible "
                               "with 0). That is relevance of the model's mean behaviour, not of deviations from it "
                               "(methods.md).", {"explainer": name, "features": idle}))
    if facts is not None and facts.correlated and names & OCCLUSION_LIKE:
        a, b, rho = facts.correlated[0]
        out.append(Finding("agreement", "info",
                           f"Why occlusion and Shapley rankings move: {len(facts.correlated)} pairs of inputs are "
                           f"strongly correlated (|ρ| > 0.9, e.g. {a}~{b}, ρ = {rho:+.2f}); these methods split or "
                           "shift importance between such inputs.",
                           {"correlated_pairs": len(facts.correlated)}))
    return out


def _contains_zero(score: Any) -> bool:
    ci = score.score_ci95
    return bool(ci[0] <= 0.0 <= ci[1]) if ci else abs(score.score) < 1e-4


def ood(name: str, result: ExplainerResult | None) -> list[Finding]:
    if not _ok(result) or result is None:
        return []
    f = result.fields
    fraction, ref = f.get("flagged_fraction"), f.get("reference_flagged_fraction")
    if fraction is None or ref is None:
        return [Finding("ood", "info", f"{name}: no reference sample, so the flagged fraction says nothing about "
                        "a shift (the threshold is a quantile of the audited jets themselves).", {"explainer": name})]
    err = math.hypot(f.get("flagged_fraction_error") or 0.0, f.get("reference_flagged_fraction_error") or 0.0)
    numbers = {"explainer": name, "flagged_fraction": fraction, "reference_flagged_fraction": ref,
               "combined_error": err, "auroc": f.get("auroc")}
    auroc = f" (reference-vs-audited AUROC {f['auroc']:.3f})" if f.get("auroc") is not None else ""
    values = f"{100 * fraction:.1f} % of the audited jets against {100 * ref:.1f} % of the reference"
    if err > 0 and abs(fraction - ref) > 2 * err:
        return [Finding("ood", "warning", f"{name} flags {values}: the data differs from the reference beyond "
                        f"noise (±{100 * err:.1f} %){auroc}.", numbers)]
    return [Finding("ood", "ok", f"{name} flags {values}: equal within noise (±{100 * err:.1f} %){auroc}.", numbers)]


def calibration(result: ExplainerResult | None) -> list[Finding]:
    if not _ok(result) or result is None:
        return []
    f = result.fields
    ece = f.get("ece")
    rel = f.get("reliability") or {}
    if ece is None:
        return []
    floor = calibrated_ece(rel.get("mean_score") or [], rel.get("weight") or [])
    numbers = {"ece": ece, "calibrated_ece": floor, "ece_balanced": f.get("ece_balanced")}
    platt = (f.get("recalibration") or {}).get("platt")
    if floor is not None and ece > ECE_NOISE_MULTIPLE * floor:
        hint = f"; Platt scaling would bring it to {platt['ece']:.4f}" if platt else ""
        return [Finding("calibration", "warning",
                        f"The score is not a calibrated probability on these jets: ECE {ece:.4f}, against ≈ "
                        f"{floor:.4f} expected from sampling alone{hint}.", numbers)]
    text = f"The score is calibrated within noise: ECE {ece:.4f}" + (
        f" (≈ {floor:.4f} expected from sampling alone)." if floor is not None else ".")
    return [Finding("calibration", "ok", text, numbers)]


def calibrated_ece(mean_score: Sequence[float | None], weight: Sequence[float]) -> float | None:
    """The ECE a perfectly calibrated score would show from sampling alone: per bin, the mean
    absolute deviation of a binomial fraction, √(2 p(1 − p) / (π n)), weighted as the ECE
    (bin weights taken as jet counts)."""
    total = float(sum(weight))
    if total <= 0:
        return None
    out = 0.0
    for p, n in zip(mean_score, weight):
        if p is None or n <= 0:
            continue
        out += (n / total) * math.sqrt(2 * p * (1 - p) / (math.pi * n))
    return out


def gates(report: AuditReport) -> list[Finding]:
    if not report.gates:
        return []
    failed = [g for g in report.gates if not g.passed]
    if failed:
        return [Finding("gates", "alert", f"Gate failed: {g.message}", {"path": g.path, "value": g.value,
                        "min": g.min, "max": g.max}) for g in failed]
    passed = "The gate passes" if len(report.gates) == 1 else f"All {len(report.gates)} gates pass"
    return [Finding("gates", "ok", f"{passed}: " + "; ".join(g.message for g in report.gates) + ".",
                    {"gates": [g.path for g in report.gates]})]
