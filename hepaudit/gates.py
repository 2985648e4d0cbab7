"""``[gates]``: rules on report values that make ``hepaudit audit`` exit 1 when they fail.

A rule names a value by its dotted path in report.json below ``explainers`` (e.g.
``"dauc.baseline_auc"``, ``"ood_ae.flagged_fraction"``) or from the top
(``"data.n_jets"``), with ``min`` and/or ``max``. A missing or non-numeric value fails
the gate with a message saying so: a CI gate must not pass by accident.
"""

from __future__ import annotations

from typing import Any

from hepaudit.config import GateRule
from hepaudit.results import AuditReport, GateOutcome


def _lookup(tree: Any, path: list[str]) -> Any:
    for part in path:
        if isinstance(tree, dict) and part in tree:
            tree = tree[part]
        elif isinstance(tree, list) and part.isdigit() and int(part) < len(tree):
            tree = tree[int(part)]
        else:
            raise KeyError(part)
    return tree


def evaluate_gates(gates: dict[str, GateRule], report: AuditReport) -> list[GateOutcome]:
    doc = report.to_dict()
    outcomes = []
    for path, rule in gates.items():
        parts = path.split(".")
        value: Any = None
        try:
            value = _lookup(doc["explainers"], parts) if parts[0] in doc["explainers"] else _lookup(doc, parts)
        except KeyError:
            outcomes.append(GateOutcome(path, None, rule.min, rule.max, False, f"{path}: not in the report"))
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            outcomes.append(GateOutcome(path, None, rule.min, rule.max, False, f"{path}: {value!r} is not a number"))
            continue
        low = rule.min is not None and value < rule.min
        high = rule.max is not None and value > rule.max
        if low or high:
            bound = f"min {rule.min}" if low else f"max {rule.max}"
            message = f"{path} = {value:.6g} fails {bound}"
        else:
            message = f"{path} = {value:.6g} passes"
        outcomes.append(GateOutcome(path, float(value), rule.min, rule.max, not (low or high), message))
    return outcomes
