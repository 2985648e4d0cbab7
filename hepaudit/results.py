"""The one result container every explainer returns, and the audit report that holds them.

Like shap's ``Explanation``: reporting, plotting and agreement tables read these and never
special-case an explainer. Explainer-specific numbers go into ``fields``; they are written
into report.json next to the common keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    from hepaudit.explanation import Explanation

Status = Literal["ok", "failed", "skipped"]
#: the label values' names: 0 background, 1 signal, 2 a jet without a label
CLASS_NAMES = {0: "background", 1: "signal", 2: "unlabelled"}


@dataclass
class FeatureScore:
    """One feature's (or group's) importance, overall and per class."""

    feature: str
    score: float
    score_signal: float | None = None
    score_background: float | None = None
    score_std: float | None = None  # bootstrap standard error over jets (hepaudit/bootstrap.py)
    score_ci95: list[float] | None = None  # bootstrap 95 % interval [low, high]

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "score": self.score,
            "score_signal": self.score_signal,
            "score_background": self.score_background,
            "score_std": self.score_std,
            "score_ci95": self.score_ci95,
        }


def sorted_scores(scores: list[FeatureScore]) -> list[FeatureScore]:
    """Scores sorted by ``score`` descending (stable, so ties keep model order)."""
    return sorted(scores, key=lambda s: -s.score if s.score == s.score else float("inf"))


@dataclass
class Figure:
    """A figure an explainer or plugin made: a PNG file name under figures/ and a caption."""

    name: str  # file name inside figures/, e.g. "dauc_importance.png"
    caption: str
    png: bytes = field(repr=False, default=b"")


@dataclass
class ExplainerResult:
    """What ``Explainer.finish`` returns, and what the executor records on failure or skip."""

    name: str
    status: Status = "ok"
    error: str | None = None
    plugin: dict[str, str] = field(default_factory=dict)  # {"name": ..., "version": ...}
    runtime_s: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)
    feature_importance: list[FeatureScore] | None = None
    group_importance: list[FeatureScore] | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # explainer-specific report keys
    figures: list[Figure] = field(default_factory=list)
    summary: str = ""  # one or two sentences for the HTML report
    warnings: list[str] = field(default_factory=list)
    # extra per-jet trees for per_jet.root, e.g. {"shap": {"entry": ..., "shap_pt_0": ...}}, for
    # explainers that look at a subsample; not part of report.json
    trees: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    # per-jet attributions (all jets or a sample), as one container: what draw() and the
    # shared plots read; not part of report.json (per_jet.root holds the per-jet numbers)
    explanation: Explanation | None = field(default=None, repr=False)
    # bootstrap replicates of the rankings (hepaudit/bootstrap.py), for the agreement's intervals;
    # not part of report.json (the intervals are)
    replicates: list[Any] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "error": self.error,
            "plugin": self.plugin,
            "runtime_s": self.runtime_s,
            "options": self.options,
        }
        if self.feature_importance is not None:
            out["feature_importance"] = [s.to_dict() for s in self.feature_importance]
        if self.group_importance is not None:
            out["group_importance"] = [s.to_dict() for s in self.group_importance]
        out.update(self.fields)
        if self.figures:
            out["figures"] = [f"figures/{f.name}" for f in self.figures]
        return out


@dataclass
class Agreement:
    """Rank agreement of two attribution methods over the units both rank: single features,
    or groups of features (``units``); a ranking of groups is never compared with one of features."""

    a: str
    b: str
    kendall_tau: float | None
    top10_overlap: float | None
    units: str = "features"  # "features" or "groups"
    n_common: int | None = None
    kendall_tau_ci95: list[float] | None = None  # over the bootstrap replicates of both rankings
    # the noise level: the lower of the two methods' agreement with themselves on resampled jets
    # (median τ and 2.5th percentile of the top-10 overlap between bootstrap replicates)
    noise_kendall_tau: float | None = None
    noise_top10_overlap: float | None = None
    # the two rankings differ no more than one method differs from itself under resampling:
    # τ's interval reaches noise_kendall_tau, or the overlap reaches noise_top10_overlap
    within_noise: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "kendall_tau": self.kendall_tau, "top10_overlap": self.top10_overlap,
                "units": self.units, "n_common": self.n_common, "kendall_tau_ci95": self.kendall_tau_ci95,
                "noise_kendall_tau": self.noise_kendall_tau, "noise_top10_overlap": self.noise_top10_overlap,
                "within_noise": self.within_noise}


FindingLevel = Literal["alert", "warning", "ok", "info"]


@dataclass
class Finding:
    """One statement of the verdict at the top of the report, with the numbers behind it.

    ``level``: ``alert`` (the audit's numbers cannot be trusted as they stand), ``warning``
    (read with care), ``ok`` (a check passed), ``info`` (a measured fact)."""

    kind: str  # what it is about: "performance", "agreement", "sanity", "ood", "calibration", "gates", "config"
    level: FindingLevel
    text: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "level": self.level, "text": self.text, "numbers": self.numbers}


@dataclass
class ReportSection:
    """An extra section a plugin adds to the report (hook ``hepaudit_report_sections``).

    ``text`` is plain text (escaped in HTML); ``data`` goes into report.json under
    ``sections[key]``.
    """

    key: str
    title: str
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)


@dataclass
class GateOutcome:
    """One ``[gates]`` rule evaluated against the results."""

    path: str
    value: float | None
    min: float | None
    max: float | None
    passed: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "value": self.value, "min": self.min, "max": self.max,
                "passed": self.passed, "message": self.message}


@dataclass
class AuditReport:
    """Everything an audit found; ``to_dict`` is report.json (docs/contract.md section 3)."""

    hepaudit_version: str
    created: str
    config: dict[str, Any]
    model: dict[str, Any]
    data: dict[str, Any]
    features: list[str]
    explainers: dict[str, ExplainerResult]
    agreement: list[Agreement] = field(default_factory=list)
    per_jet_file: str | None = None  # "per_jet.root" in output_dir when written (report.json's "per_jet")
    warnings: list[str] = field(default_factory=list)
    timing: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)
    sections: list[ReportSection] = field(default_factory=list)
    gates: list[GateOutcome] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # the verdict, most important first
    output_dir: str | None = None
    schema_version: int = 1
    # per-jet columns held in memory (an audit with out=None), else read from per_jet_file on first use
    _per_jet: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    # figures of the whole report drawn with the explainers' (the ranking comparison), for the writer
    _drawn: list[Figure] = field(default_factory=list, repr=False, compare=False)

    @property
    def gates_passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def per_jet(self) -> dict[str, Any]:
        """Per-jet results, one entry per audited jet in input order, as numpy arrays keyed by
        per_jet.root's branch names (``entry``, ``score``, ``label``, each explainer's columns);
        explainers' further trees (SHAP's subsample) under their tree name, as dicts."""
        if self._per_jet is None:
            self._per_jet = {}
            if self.per_jet_file and self.output_dir:
                self._per_jet = read_per_jet(Path(self.output_dir) / self.per_jet_file)
        return self._per_jet

    def __repr__(self) -> str:
        ok = sum(r.status == "ok" for r in self.explainers.values())
        return (f"<AuditReport: {self.data.get('n_jets')} jets, {ok} of {len(self.explainers)} explainers ok, "
                f"{len(self.findings)} findings, {len(self.warnings)} warnings"
                + (f", in {self.output_dir}" if self.output_dir else "") + ">")

    def _repr_html_(self) -> str:
        from hepaudit.report.notebook import report_html_summary

        return report_html_summary(self)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema_version": self.schema_version,
            "hepaudit_version": self.hepaudit_version,
            "created": self.created,
            "config": self.config,
            "model": self.model,
            "data": self.data,
            "features": self.features,
            "findings": [f.to_dict() for f in self.findings],
            "explainers": {name: r.to_dict() for name, r in self.explainers.items()},
            "agreement": [a.to_dict() for a in self.agreement],
            "per_jet": self.per_jet_file,
            "warnings": self.warnings,
            "timing": self.timing,
        }
        if self.gates:
            out["gates"] = [g.to_dict() for g in self.gates]
        if self.sections:
            out["sections"] = {s.key: {"title": s.title, "text": s.text, **s.data} for s in self.sections}
        return out


def read_per_jet(path: Path) -> dict[str, Any]:
    """per_jet.root into memory: the ``hepaudit`` tree's branches as numpy arrays, and every
    further tree as a dict of its own under its name."""
    import uproot

    out: dict[str, Any] = {}
    with uproot.open(path) as handle:
        for name in handle.keys(cycle=False, filter_classname="TTree"):
            arrays = handle[name].arrays(library="np")
            if name == "hepaudit":
                out.update(arrays)
            else:
                out[name] = dict(arrays)
    return out
