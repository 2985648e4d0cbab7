"""report.json: the AuditReport as strict JSON (docs/contract.md section 3).

``json.dumps`` would write NaN and Infinity, which are not JSON and break most readers; here
every non-finite float becomes null and the report's ``warnings`` says where. numpy scalars
and arrays become plain Python numbers and lists. Key order is that of ``AuditReport.to_dict``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import numpy as np

from hepaudit.results import AuditReport


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def to_plain(value: Any, path: str, warnings: list[str]) -> Any:
    """``value`` as JSON-safe Python: finite floats, lists, str-keyed dicts; notes each NaN/inf."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        what = "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        warnings.append(f"{path} was {what}; written as null")
        return None
    if isinstance(value, Mapping):
        return {str(k): to_plain(v, _join(path, str(k)), warnings) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [to_plain(v, f"{path}[{i}]", warnings) for i, v in enumerate(items)]
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    # Anything else (an enum, a dataclass an explainer put into fields) as its text.
    return str(value)


def report_dict(report: AuditReport) -> dict[str, Any]:
    """``report.to_dict()`` made JSON-safe, with a warning per non-finite number appended."""
    found: list[str] = []
    out = to_plain(report.to_dict(), "", found)
    out["warnings"] = list(out.get("warnings") or []) + found
    return out


def report_json(report: AuditReport) -> str:
    """The text of report.json: strict JSON (no NaN/Infinity), ``indent=2``, ending in a newline."""
    return json.dumps(report_dict(report), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
