"""CMSSW's ``preprocess.json``, read and checked: a light module (json and dataclasses only).

The config reads it to expand ``name = "*"`` and to take the class names, and the ``cms``
input kind (:mod:`hepaudit.data.cms`) to normalise each variable; neither imports the other
for it. Errors name the file and the key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from hepaudit.errors import ConfigError


@dataclass(frozen=True)
class CmsVariable:
    """One row of the config's variable table: where the variable comes from, and optional
    overrides of its normalisation (taken from preprocess.json when it has the variable)."""

    source: str | float
    median: float | None = None
    norm_factor: float | None = None
    lower_bound: float | None = None
    upper_bound: float | None = None
    pad: float | None = None
    replace_inf_value: float | None = None


@dataclass(frozen=True)
class VariableInfo:
    """CMSSW's per-variable preprocessing; the defaults are CMSSW's when a key is absent."""

    median: float = 0.0
    norm_factor: float = 1.0
    lower_bound: float = -5.0
    upper_bound: float = 5.0
    pad: float = 0.0
    replace_inf_value: float = 0.0

    def overridden(self, row: CmsVariable) -> VariableInfo:
        keys = ("median", "norm_factor", "lower_bound", "upper_bound", "pad", "replace_inf_value")
        return VariableInfo(**{k: getattr(row, k) if getattr(row, k) is not None else getattr(self, k)
                               for k in keys})


@dataclass(frozen=True)
class InputSpec:
    """One ONNX input as preprocess.json describes it."""

    name: str
    var_names: tuple[str, ...]
    var_length: int
    infos: dict[str, VariableInfo]
    input_shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Preprocess:
    """A whole preprocess.json: its inputs in order and the output class names."""

    path: str
    input_names: tuple[str, ...]
    inputs: dict[str, InputSpec]
    flav_names: tuple[str, ...] | None = None


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, found {value!r}")
    return float(value)


def read_preprocess_json(path: str | Path) -> Preprocess:
    """Read and check a CMSSW ``preprocess.json``; errors name the file and the key."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: preprocess.json not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable preprocess.json ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("input_names"), list):
        raise ConfigError(f"{path}: expected a JSON object with \"input_names\": [...]")
    names = tuple(str(n) for n in raw["input_names"])
    inputs: dict[str, InputSpec] = {}
    for name in names:
        table = raw.get(name)
        where = f"{path}: {name}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: input {name!r} is in input_names but has no table")
        var_names = table.get("var_names")
        if not isinstance(var_names, list) or not var_names:
            raise ConfigError(f"{where}.var_names: expected a non-empty list of variable names")
        length = table.get("var_length")
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ConfigError(f"{where}.var_length: expected a positive integer, found {length!r}")
        var_infos = table.get("var_infos", {})
        if not isinstance(var_infos, dict):
            raise ConfigError(f"{where}.var_infos: expected a table")
        infos: dict[str, VariableInfo] = {}
        for var in var_names:
            info = var_infos.get(var, {})
            if not isinstance(info, dict):
                raise ConfigError(f"{where}.var_infos.{var}: expected a table")
            # CMSSW accepts "center" for the median in older files
            median = info.get("median", info.get("center", 0.0))
            infos[var] = VariableInfo(
                median=_number(median, f"{where}.var_infos.{var}.median"),
                **{k: _number(info[k], f"{where}.var_infos.{var}.{k}")
                   for k in ("norm_factor", "lower_bound", "upper_bound", "pad", "replace_inf_value") if k in info},
            )
        shape = table.get("input_shape")
        inputs[name] = InputSpec(name, tuple(str(v) for v in var_names), length, infos,
                                 tuple(int(s) for s in shape) if isinstance(shape, list) else None)
    flav = raw.get("flav_names")
    flav_names = tuple(str(f) for f in flav) if isinstance(flav, list) and flav else None
    return Preprocess(str(path), names, inputs, flav_names)
