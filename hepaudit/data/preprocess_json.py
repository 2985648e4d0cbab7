"""CMSSW's ``preprocess.json``, read and checked: a light module (json and dataclasses only).

Two formats are read. CMSSW's own gives each input a ``var_length`` and names the output
columns in ``flav_names``; weaver's (most files in cms-data/RecoBTag-Combined) gives
``min_length``/``max_length`` and ``output_names``. A weaver input is padded to its
``max_length``: CMSSW clamps each jet's object count into [min_length, max_length] and runs
jets one by one, hepaudit runs jets in batches of one length, and the model's mask input keeps
the extra padding out of the result. ``output_names`` name the output columns when the file
has no ``flav_names`` and lists more than one name (a single name is an output tensor's).

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
    var_length: int  # the padded length: var_length, or weaver's max_length
    infos: dict[str, VariableInfo]
    input_shape: tuple[int, ...] | None = None
    min_length: int | None = None  # weaver's format only


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
        length, min_length = _lengths(table, where)
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
                                 tuple(int(s) for s in shape) if isinstance(shape, list) else None, min_length)
    return Preprocess(str(path), names, inputs, _class_names(raw))


def _positive(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: expected a positive integer, found {value!r}")
    return value


def _lengths(table: dict[str, object], where: str) -> tuple[int, int | None]:
    """(padded length, weaver's min_length or None) from either format."""
    if "var_length" in table:
        return _positive(table["var_length"], f"{where}.var_length"), None
    if "max_length" in table:
        top = _positive(table["max_length"], f"{where}.max_length")
        low = _positive(table.get("min_length", 1), f"{where}.min_length")
        if low > top:
            raise ConfigError(f"{where}: min_length {low} is above max_length {top}")
        return top, low
    raise ConfigError(f"{where}: expected var_length (CMSSW's format) or min_length/max_length (weaver's)")


def _class_names(raw: dict[str, object]) -> tuple[str, ...] | None:
    flav = raw.get("flav_names")
    if isinstance(flav, list) and flav:
        return tuple(str(f) for f in flav)
    names = raw.get("output_names")
    if isinstance(names, list) and len(names) > 1:
        return tuple(str(f) for f in names)
    return None
