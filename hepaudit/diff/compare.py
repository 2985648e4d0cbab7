"""Two audits side by side: what changed between a model v1 and v2 (or one model on two samples).

The comparison reads two report.json documents and nothing else. A number "changed" only when
it moved by more than the two audits' 95 % intervals combined in quadrature,
√(h_a² + h_b²) with h the half-width of each interval: the AUC, each feature's score, each
OOD flagged fraction (from its binomial errors). For two audits of the same jets the two
estimates are positively correlated, so this is conservative: what it calls a change is one.
Numbers without an interval (NAP sparsity, ECE) are shown side by side and never called a change.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from hepaudit import __version__
from hepaudit.errors import ConfigError
from hepaudit.metrics import kendall_tau

DIFF_SCHEMA_VERSION = 1


def load_report(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """A report.json (or a report folder holding one): its path and document."""
    path = Path(path)
    file = path / "report.json" if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(f"{path}: no report.json there (give a report folder or its report.json)")
    try:
        doc = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{file}: not a readable report.json ({type(exc).__name__}: {exc})") from None
    if not isinstance(doc, dict) or "explainers" not in doc or "schema_version" not in doc:
        raise ConfigError(f"{file}: not a hepaudit report.json (no schema_version or explainers)")
    return file, doc


def _half_width(ci: Any) -> float | None:
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or ci[0] is None or ci[1] is None:
        return None
    return (float(ci[1]) - float(ci[0])) / 2


def _combined(ha: float | None, hb: float | None) -> float | None:
    return None if ha is None or hb is None else math.hypot(ha, hb)


def compare_values(a: float | None, b: float | None, ci_a: Any = None, ci_b: Any = None) -> dict[str, Any]:
    """``{a, b, delta, tolerance, significant}``: significant when |Δ| exceeds the combined intervals."""
    out: dict[str, Any] = {"a": a, "b": b, "a_ci95": ci_a, "b_ci95": ci_b, "delta": None, "tolerance": None,
                           "significant": None}
    if a is None or b is None:
        return out
    out["delta"] = float(b) - float(a)
    tolerance = _combined(_half_width(ci_a), _half_width(ci_b))
    out["tolerance"] = tolerance
    out["significant"] = None if tolerance is None else bool(abs(out["delta"]) > tolerance)
    return out


def _auc(doc: dict[str, Any]) -> tuple[float | None, Any]:
    performance = (doc.get("sections") or {}).get("performance") or {}
    if performance.get("auc") is not None:
        return performance["auc"], performance.get("auc_ci95")
    dauc = doc["explainers"].get("dauc") or {}
    return dauc.get("baseline_auc"), None


def _ok(doc: dict[str, Any], name: str) -> dict[str, Any] | None:
    result = doc["explainers"].get(name)
    return result if isinstance(result, dict) and result.get("status") == "ok" else None


def compare_rankings(a: list[dict[str, Any]], b: list[dict[str, Any]], top: int = 10) -> dict[str, Any]:
    """Kendall τ over the features both rank, the features whose score changed beyond the
    combined intervals (largest change first), and the features only one of them has."""
    sa = {e["feature"]: e for e in a}
    sb = {e["feature"]: e for e in b}
    common = [f for f in sa if f in sb]
    tau = kendall_tau(np.array([sa[f]["score"] for f in common], float),
                      np.array([sb[f]["score"] for f in common], float)) if len(common) > 1 else float("nan")
    changed = []
    intervals = True
    for feature in common:
        c = compare_values(sa[feature]["score"], sb[feature]["score"], sa[feature].get("score_ci95"),
                           sb[feature].get("score_ci95"))
        intervals &= c["significant"] is not None
        if c["significant"]:
            changed.append({"feature": feature, **c})
    changed.sort(key=lambda c: -abs(c["delta"]))
    leaders = list(dict.fromkeys([e["feature"] for e in a[:top]] + [e["feature"] for e in b[:top]]))
    shown = [{"feature": f, "a": sa[f]["score"] if f in sa else None, "b": sb[f]["score"] if f in sb else None,
              "a_ci95": sa[f].get("score_ci95") if f in sa else None,
              "b_ci95": sb[f].get("score_ci95") if f in sb else None} for f in leaders]
    return {"kendall_tau": None if math.isnan(tau) else tau, "n_common": len(common),
            "intervals": intervals, "changed": changed,
            "only_in_a": [f for f in sa if f not in sb], "only_in_b": [f for f in sb if f not in sa],
            "top_a": [e["feature"] for e in a[:top]], "top_b": [e["feature"] for e in b[:top]], "shown": shown}


def _fraction_ci(result: dict[str, Any], key: str) -> list[float] | None:
    value, error = result.get(key), result.get(f"{key}_error")
    if value is None or error is None:
        return None
    return [value - 1.96 * error, value + 1.96 * error]


def diff_reports(a: dict[str, Any], b: dict[str, Any], path_a: str = "A", path_b: str = "B") -> dict[str, Any]:
    """diff.json: the two audits compared (module docstring for what counts as a change)."""
    auc_a, ci_a = _auc(a)
    auc_b, ci_b = _auc(b)
    out: dict[str, Any] = {
        "schema_version": DIFF_SCHEMA_VERSION,
        "hepaudit_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "a": _side(a, path_a),
        "b": _side(b, path_b),
        "same_data": _data_key(a) == _data_key(b),
        "same_model": (a.get("model") or {}).get("sha256") == (b.get("model") or {}).get("sha256"),
        "baseline_auc": compare_values(auc_a, auc_b, ci_a, ci_b),
        "explainers": {},
        "nap": None,
        "ood": {},
        "calibration": None,
    }
    for name in a["explainers"]:
        ra, rb = _ok(a, name), _ok(b, name)
        if ra is None or rb is None or not ra.get("feature_importance") or not rb.get("feature_importance"):
            continue
        out["explainers"][name] = compare_rankings(ra["feature_importance"], rb["feature_importance"])
    na, nb = _ok(a, "nap"), _ok(b, "nap")
    if na is not None and nb is not None:
        out["nap"] = {"sparsity": {"a": na.get("sparsity"), "b": nb.get("sparsity")},
                      "layers": [{"name": la.get("name"), "a": la.get("sparsity"), "b": lb.get("sparsity")}
                                 for la, lb in zip(na.get("layers") or [], nb.get("layers") or [])
                                 if la.get("name") == lb.get("name")]}
    for name in ("ood_ae", "ood_ensemble"):
        oa, ob = _ok(a, name), _ok(b, name)
        if oa is None or ob is None:
            continue
        out["ood"][name] = {
            "flagged_fraction": compare_values(oa.get("flagged_fraction"), ob.get("flagged_fraction"),
                                               _fraction_ci(oa, "flagged_fraction"),
                                               _fraction_ci(ob, "flagged_fraction")),
            "reference_flagged_fraction": {"a": oa.get("reference_flagged_fraction"),
                                           "b": ob.get("reference_flagged_fraction")},
            "auroc": {"a": oa.get("auroc"), "b": ob.get("auroc")}}
    ca, cb = _ok(a, "calibration"), _ok(b, "calibration")
    if ca is not None and cb is not None:
        out["calibration"] = {"ece": {"a": ca.get("ece"), "b": cb.get("ece")},
                              "ece_balanced": {"a": ca.get("ece_balanced"), "b": cb.get("ece_balanced")}}
    out["roc"] = {side: ((doc.get("sections") or {}).get("performance") or {}).get("roc") for side, doc in
                  (("a", a), ("b", b))}
    out["changes"] = changes(out)
    out["changed"] = bool(out["changes"])
    return out


def _side(doc: dict[str, Any], path: str) -> dict[str, Any]:
    model = doc.get("model") or {}
    data = doc.get("data") or {}
    return {"report": path, "model": model.get("path"), "sha256": model.get("sha256"),
            "n_jets": data.get("n_jets"), "files": [f.get("path") for f in data.get("files") or []],
            "features": len(doc.get("features") or []), "created": doc.get("created")}


def _data_key(doc: dict[str, Any]) -> tuple[Any, ...]:
    data = doc.get("data") or {}
    return (tuple((f.get("path"), f.get("sha256"), f.get("entries")) for f in data.get("files") or []),
            data.get("n_jets"))


def changes(diff: dict[str, Any]) -> list[str]:
    """One sentence per significant change (empty: nothing changed beyond the intervals)."""
    out: list[str] = []
    auc = diff["baseline_auc"]
    if auc["significant"]:
        out.append(f"AUC {auc['a']:.4f} → {auc['b']:.4f} (Δ = {auc['delta']:+.4f}, beyond the combined 95 % "
                   f"intervals ±{auc['tolerance']:.4f})")
    for name, ranking in diff["explainers"].items():
        if ranking["changed"]:
            listed = ", ".join(f"{c['feature']} {c['a']:.3g} → {c['b']:.3g}" for c in ranking["changed"][:5])
            more = f" and {len(ranking['changed']) - 5} more" if len(ranking["changed"]) > 5 else ""
            out.append(f"{name}: {len(ranking['changed'])} feature(s) moved beyond their intervals: {listed}{more}")
    for name, entry in diff["ood"].items():
        fraction = entry["flagged_fraction"]
        if fraction["significant"]:
            out.append(f"{name}: flagged fraction {100 * fraction['a']:.2f} % → {100 * fraction['b']:.2f} %")
    return out


def write_diff(diff: dict[str, Any], out_dir: Path) -> None:
    """diff.json and diff.html into ``out_dir`` (made if missing)."""
    from hepaudit.diff.page import render_diff_html

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "diff.json").write_text(json.dumps(diff, indent=2, allow_nan=False))
    (out_dir / "diff.html").write_text(render_diff_html(diff))
