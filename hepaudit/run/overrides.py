"""The caller's overrides folded into the config: the first step of :func:`hepaudit.audit`.

Kept apart from :mod:`hepaudit.run.plan` and light to import (the config alone, no numpy):
the audit knows how many processes will draw its figures, and starts them, before it
imports the readers and onnxruntime (:func:`hepaudit.report.drawing.started_early`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from hepaudit.config import AuditConfig, config_from_dict, load_config
from hepaudit.errors import ConfigError

#: data.files of a dict config whose jets come from memory (``arrays=``)
IN_MEMORY = "<arrays>"


def apply_overrides(config: str | Path | AuditConfig | Mapping[str, Any], *, max_jets: int | None = None,
                    seed: int | None = None, executor: str | None = None, scheduler: object = None,
                    workers: int | None = None, in_memory: bool = False) -> AuditConfig:
    """The config with the caller's overrides; a ``distributed.Client`` as ``scheduler`` is not
    config and goes to the executor as it is. A dict has the TOML's structure, its relative
    paths taken from the current folder; with ``in_memory`` (jets given as arrays) its
    ``[data]`` needs no ``files``."""
    if isinstance(config, AuditConfig):
        cfg = config
    elif isinstance(config, Mapping):
        raw = dict(config)
        if in_memory and isinstance(raw.get("data"), Mapping) and "files" not in raw["data"]:
            raw["data"] = {**raw["data"], "files": [IN_MEMORY]}  # the jets come as arrays= instead
        cfg = config_from_dict(raw, Path.cwd(), source=None)
    elif isinstance(config, (str, Path)):
        cfg = load_config(config)
    else:
        raise ConfigError(f"config: expected a path, a dict or an AuditConfig, found {type(config).__name__}")
    if max_jets is not None:
        cfg = replace(cfg, data=replace(cfg.data, max_jets=max_jets))
    if seed is not None:
        cfg = replace(cfg, execution=replace(cfg.execution, seed=seed))
    if scheduler is not None or workers is not None:
        executor = executor or "dask"
        if executor != "dask":
            raise ConfigError("scheduler and workers are Dask options: use them with executor = \"dask\"")
        if scheduler is not None and workers is not None:
            raise ConfigError("give either a Dask scheduler or a number of local workers, not both")
        address = scheduler if isinstance(scheduler, str) else None
        changes = {"scheduler": address, "workers": None} if scheduler is not None else \
            {"workers": workers, "scheduler": None}
        cfg = replace(cfg, execution=replace(cfg.execution, **changes))
    if executor is not None:
        if executor not in ("local", "dask"):
            raise ConfigError(f"executor: expected 'local' or 'dask', found {executor!r}")
        cfg = replace(cfg, execution=replace(cfg.execution, executor="dask" if executor == "dask" else "local"))
    return cfg
