"""What a plugin's own tests need: tiny real ROOT files and ONNX models, and check_explainer().

::

    from hepaudit.testing import check_explainer, tiny_audit

    def test_my_explainer_merges(tmp_path):
        config = tiny_audit(tmp_path, {"my_method": {}})
        check_explainer(config, "my_method")

:func:`tiny_audit` writes a real ROOT file (uproot), a real ONNX model (onnx.helper, run by
onnxruntime) and an audit config beside them. :func:`check_explainer` runs one explainer
through the real executor three ways — the whole sample as one state, the sample cut into
partitions merged pairwise up a tree, and the same partitions merged in one left fold — and
raises :class:`AssertionError` naming every number that differs: an explainer whose
``merge`` drops or double-counts jets, or whose result depends on how the sample was
split, fails here, before a Dask run would show it.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CheckedRuns", "check_explainer", "tiny_audit", "tiny_jets", "tiny_mlp"]


def tiny_jets(path: str | Path, n: int = 600, features: int = 4, seed: int = 0, tree: str = "jets") -> Path:
    """A ROOT file with a classic TTree of ``n`` jets: float32 features ``f0``.. that separate the
    classes to decreasing degrees, ``is_signal`` (0/1, balanced) and a positive ``weight``."""
    import uproot

    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 2).astype(np.int32)
    rng.shuffle(labels)
    branches: dict[str, np.ndarray] = {
        f"f{k}": (rng.normal(0.0, 1.0, n) + 1.2 / (k + 1) * labels).astype(np.float32) for k in range(features)}
    branches["is_signal"] = labels
    branches["weight"] = rng.uniform(0.2, 2.0, n)
    path = Path(path)
    with uproot.recreate(path) as handle:
        handle.mktree(tree, {k: v.dtype for k, v in branches.items()})
        handle[tree].extend(branches)
    return path


def tiny_mlp(path: str | Path, n_inputs: int = 4, hidden: Sequence[int] = (8,), seed: int = 0) -> Path:
    """An ONNX MLP ``x`` (N, n_inputs) → ``score`` (N, 1): Gemm + ReLU layers and a Sigmoid head."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    sizes = [n_inputs, *hidden, 1]
    nodes, inits, current = [], [], "x"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = (rng.normal(0.0, 1.0, (b, a)) / math.sqrt(a)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(rng.normal(0, 0.1, b).astype(np.float32),
                                                                               f"b{i}")]
        last = i == len(sizes) - 2
        out = "logit" if last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [current, f"W{i}", f"b{i}"], [out if last else out + "_pre"], transB=1))
        if not last:
            nodes.append(helper.make_node("Relu", [out + "_pre"], [out]))
        current = out
    nodes.append(helper.make_node("Sigmoid", ["logit"], ["score"]))
    graph = helper.make_graph(nodes, "tiny_mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_inputs])],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="hepaudit.testing")
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, path)
    return path


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"


def tiny_audit(folder: str | Path, explainers: dict[str, dict[str, Any]], n: int = 600, features: int = 4,
               seed: int = 0, step_size: int = 100) -> Path:
    """``jets.root``, ``model.onnx`` and ``audit.toml`` (running ``explainers``) in ``folder``;
    the config's path. The data holds ``n`` jets read in chunks of ``step_size``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tiny_jets(folder / "jets.root", n, features, seed)
    tiny_mlp(folder / "model.onnx", features, seed=seed + 1)
    lines = ['[model]', 'path = "model.onnx"', '', '[data]', 'files = ["jets.root"]', 'tree = "jets"',
             'label = "is_signal"', 'weight = "weight"', f"step_size = {step_size}", '', '[[inputs]]',
             'name = "x"', 'kind = "jet"', f"branches = {_toml_value([f'f{k}' for k in range(features)])}", '',
             '[execution]', 'progress = false', '']
    for name, options in explainers.items():
        lines.append(f"[explainers.{name}]")
        lines += [f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in options.items()]
        lines.append("")
    path = folder / "audit.toml"
    path.write_text("\n".join(lines))
    return path


@dataclass
class CheckedRuns:
    """The three runs :func:`check_explainer` compared: results and per-jet columns by run."""

    results: dict[str, Any]
    per_jet: dict[str, dict[str, np.ndarray]]


def _run_once(cfg: Any, name: str, plugins: Sequence[tuple[str, object]], partition_size: int | None,
              split_every: int, out: Path) -> tuple[Any, dict[str, np.ndarray]]:
    import uproot

    from hepaudit.executors.local import LocalExecutor
    from hepaudit.plugins import PluginHost
    from hepaudit.report.assemble import collect_results, write_trees
    from hepaudit.report.per_jet import PerJetWriter
    from hepaudit.run.execute import execute
    from hepaudit.run.plan import AuditPlan
    from hepaudit.run.progress import Progress

    out.mkdir(parents=True, exist_ok=True)
    plan = AuditPlan.build(cfg, PluginHost(extra=plugins), [name], out)
    writer = PerJetWriter(out / "per_jet.root")
    executor = LocalExecutor(partition_size=partition_size, split_every=split_every)
    execute(plan, executor, writer, Progress())
    results = collect_results(plan)
    write_trees(results, writer)
    result = results[name]
    columns: dict[str, np.ndarray] = {}
    if (out / "per_jet.root").exists():
        with uproot.open(out / "per_jet.root") as handle:
            for key in handle.keys(cycle=False):
                for column, values in handle[key].arrays(library="np").items():
                    columns[f"{key}/{column}"] = values
    return result, columns


def _differences(a: Any, b: Any, where: str, rtol: float, atol: float) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        if sorted(a) != sorted(b):
            return [f"{where}: keys {sorted(a)} vs {sorted(b)}"]
        return [d for k in a for d in _differences(a[k], b[k], f"{where}.{k}", rtol, atol)]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and \
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in [*a, *b]):
        if len(a) != len(b):
            return [f"{where}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{where}[{i}]", rtol, atol)]
    if a is None or b is None or isinstance(a, (str, bool)) or isinstance(b, (str, bool)):
        return [] if a == b else [f"{where}: {a!r} vs {b!r}"]
    x, y = np.asarray(a, float), np.asarray(b, float)
    if x.shape != y.shape:
        return [f"{where}: shape {x.shape} vs {y.shape}"]
    if np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True):
        return []
    worst = np.nanmax(np.abs(x - y)) if x.size else 0.0
    return [f"{where}: differs (largest difference {worst:.3g})"]


def _result_table(result: Any) -> dict[str, Any]:
    return {"status": result.status, "error": result.error,
            "feature_importance": [(s.feature, s.score, s.score_signal, s.score_background)
                                   for s in result.feature_importance or []],
            "groups": [(s.feature, s.score) for s in result.group_importance or []],
            "fields": {k: v for k, v in result.fields.items() if not k.startswith("saved_")},
            "summary": result.summary,
            "explanation": None if result.explanation is None else {
                k: v for k, v in vars(result.explanation).items() if k != "feature_names"}}


def check_explainer(config: str | Path | Any, explainer: str, *, plugins: Sequence[tuple[str, object]] = (),
                    partitions: int = 6, rtol: float = 1e-9, atol: float = 1e-12, seed: int | None = None
                    ) -> CheckedRuns:
    """Run ``explainer`` of ``config`` whole, split into about ``partitions`` partitions merged
    pairwise up a tree, and merged in one left fold; raise :class:`AssertionError` listing every
    number of the result (report fields and per-jet columns) that differs between the runs.

    :param config: an audit config (path or :class:`~hepaudit.config.AuditConfig`), e.g. from :func:`tiny_audit`.
    :param explainer: the explainer to check; it need not have a table in the config.
    :param plugins: ``(name, plugin)`` objects to register (an explainer not installed as a package).
    """
    from hepaudit.data.reading import Sample
    from hepaudit.run.overrides import apply_overrides

    cfg = apply_overrides(config, seed=seed)
    sample = Sample(cfg.data, "data")
    sample.check([], [])  # opens the files: their entries
    n = sample.n_entries
    step = max(1, -(-n // (2 * partitions)))  # two chunks a partition: every partition merges chunks too
    cfg = replace(cfg, data=replace(cfg.data, step_size=step))
    if explainer not in cfg.explainers:
        cfg = replace(cfg, explainers={**cfg.explainers, explainer: {}})
    results, columns = {}, {}
    with tempfile.TemporaryDirectory(prefix="hepaudit-check-") as tmp:
        for label, size, split in (("whole", None, 2), ("tree", 2 * step, 2), ("left fold", 2 * step, 1 << 30)):
            results[label], columns[label] = _run_once(cfg, explainer, plugins, size, split, Path(tmp) / label)
    whole = results["whole"]
    if whole.status != "ok":
        raise AssertionError(f"{explainer} did not run: {whole.status}: {whole.error}")
    problems: list[str] = []
    for label in ("tree", "left fold"):
        problems += _differences(_result_table(whole), _result_table(results[label]), f"{label}: result",
                                 rtol, atol)
        problems += _differences(columns["whole"], columns[label], f"{label}: per_jet", rtol, atol)
    if problems:
        listed = "\n  ".join(problems[:20])
        raise AssertionError(f"{explainer}: split-and-merged runs differ from the whole run:\n  {listed}")
    return CheckedRuns(results, columns)
