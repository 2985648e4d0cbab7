"""A submitted config made safe to run: the uploaded model, data only under the data roots.

The config is untrusted text. Its ``[model] path`` is replaced by the registered model's file;
every other file it names (data and reference files, globs, explainer option files such as an
ensemble's members or an autoencoder, a preprocessing JSON) is resolved against the service's
``--data-root`` folders and must lie inside one of them after symlinks are resolved. The
executor is always the service's own (a config cannot start clusters or reach a scheduler).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

from hepaudit.config import AuditConfig, config_from_dict, tomllib
from hepaudit.errors import ConfigError

#: string values with these endings are files, wherever they sit in the config
FILE_SUFFIXES = (".root", ".onnx", ".json", ".toml", ".txt", ".npz", ".npy", ".csv")
#: and so is every string under these keys, whatever its ending (a sample's ``files``, an
#: explainer's own reference table, an ensemble's members, an autoencoder, a preprocess.json)
FILE_KEYS = frozenset({"files", "members", "autoencoder", "preprocess_json", "path"})


class OutsideDataRoots(ConfigError):
    """A config names a file outside the service's data roots (HTTP 400)."""


def _inside(path: Path, roots: list[Path]) -> bool:
    real = Path(os.path.realpath(path))
    return any(real == root or root in real.parents for root in roots)


def confine(value: str, roots: list[Path], where: str) -> str:
    """``value`` (a file or a glob) as an absolute path inside a data root, or OutsideDataRoots."""
    candidate = Path(value)
    options = [candidate] if candidate.is_absolute() else [root / candidate for root in roots]
    for option in options:
        text = str(option)
        matches = glob.glob(text) if any(ch in text for ch in "*?[") else ([text] if option.exists() else [])
        if not matches:
            continue
        outside = [m for m in matches if not _inside(Path(m), roots)]
        if outside:
            break
        return text
    else:
        if not candidate.is_absolute() and not any(ch in value for ch in "*?["):
            # not found anywhere: let the audit's own check say so, pointing inside the first root
            first = roots[0] / candidate
            if _inside(first, roots):
                return str(first)
    raise OutsideDataRoots(f"{where}: {value!r} is not inside the service's data roots")


def _walk(node: Any, roots: list[Path], where: str, is_file: bool = False) -> Any:
    if isinstance(node, dict):
        return {k: _walk(v, roots, f"{where}.{k}", k in FILE_KEYS) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, roots, f"{where}[{i}]", is_file) for i, v in enumerate(node)]
    if isinstance(node, str) and (is_file or node.lower().endswith(FILE_SUFFIXES)):
        return confine(node, roots, where)
    return node


def service_config(text: str, model_path: Path, roots: list[Path]) -> AuditConfig:
    """The config to run: parsed, the model replaced, every file confined to ``roots``."""
    if not roots:
        raise ConfigError("the service has no data root: start it with --data-root DIR")
    roots = [Path(os.path.realpath(r)) for r in roots]
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: not valid TOML ({exc})") from None
    if not isinstance(raw.get("model"), dict):
        raise ConfigError("config: missing [model] table")
    model = dict(raw["model"])
    model["path"] = str(model_path)
    rest = {k: v for k, v in raw.items() if k not in ("model", "execution", "gates")}
    safe = _walk(rest, roots, "config")
    execution = dict(raw.get("execution") or {})
    for key in ("executor", "scheduler", "workers", "cache_mb"):
        execution.pop(key, None)  # the service decides where and how audits run
    execution["progress"] = False
    safe.update({"model": model, "execution": execution})
    if "gates" in raw:
        safe["gates"] = raw["gates"]
    return config_from_dict(safe, roots[0], None)
