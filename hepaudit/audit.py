"""The audit, end to end: config → plugins → data → model → explainers → report.

:func:`audit` is the public entry point (the CLI is a thin layer on it): usable from a
notebook or inside a coffea processor. It validates everything it can before reading a
single chunk (config, plugins, explainer options, files, branches, model inputs), then
hands one :class:`~hepaudit.executors.local.Job` to the executor and assembles the
:class:`~hepaudit.results.AuditReport`. The executor is the local one (this process) or
the Dask one (:mod:`hepaudit.executors.dask`, ``execution.executor = "dask"``); both get
the same prepared job and give the same report.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from hepaudit import __version__
from hepaudit.config import AuditConfig, load_config, sample_config
from hepaudit.data.builders import InputBuilder
from hepaudit.data.reading import CorruptFileError, Sample
from hepaudit.errors import ConfigError, DataError, OutputError
from hepaudit.executors.local import SCORE_BINS, ExplainerRun, Job, LocalExecutor
from hepaudit.explainers.base import AuditContext
from hepaudit.gates import evaluate_gates
from hepaudit.metrics import kendall_tau, top_k_overlap
from hepaudit.model.session import Tagger
from hepaudit.options import as_table, parse_table
from hepaudit.plugins import PluginHost
from hepaudit.report.per_jet import PerJetWriter
from hepaudit.results import Agreement, AuditReport, ExplainerResult, Figure, ReportSection
from hepaudit.run.progress import Progress, terminal_bars


def prepare_output(out: Path, force: bool) -> None:
    """Refuse a non-empty output folder unless ``force``; never delete anything else."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise OutputError(f"{out}: the output folder is not empty (it may hold an earlier report); "
                              "choose another --out or pass --force to overwrite")
        for name in ("report.json", "report.html", "per_jet.root"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "figures", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _label_counts(sample: Sample, label: str, skip_corrupt: bool = False) -> tuple[int, int, set[int]]:
    """Signal and background counts from the label branch alone (cheap: one branch).

    With ``skip_corrupt`` a file whose label branch cannot be read is dropped from the sample.
    """
    while True:
        n_sig = n_bkg = 0
        values: set[int] = set()
        try:
            for raw in sample.chunks([label]):
                lab = np.asarray(raw.arrays[label])
                values |= set(np.unique(lab).astype(int).tolist())
                n_sig += int((lab == 1).sum())
                n_bkg += int((lab == 0).sum())
        except CorruptFileError as exc:
            if not skip_corrupt:
                raise
            sample.drop(exc.path, str(exc))  # and count again: entry numbers and max_jets move
            continue
        return n_sig, n_bkg, values


def make_executor(cfg: AuditConfig, disable: Sequence[str], plugins: Sequence[tuple[str, object]],
                  client: object = None) -> object:
    """The executor ``[execution]`` asks for (a Dask one connects to or starts its cluster here;
    ``client``, a ``distributed.Client``, is used instead of ``execution.scheduler``)."""
    ex = cfg.execution
    if ex.executor == "local":
        return LocalExecutor(cache_bytes=cfg.execution.cache_mb << 20, partition_size=ex.partition_size)
    from hepaudit.executors.dask import DaskExecutor

    return DaskExecutor(cfg, scheduler=client if client is not None else ex.scheduler,
                        workers=None if client is not None else ex.workers, threads_per_worker=ex.threads_per_worker,
                        disable=tuple(disable), plugins=tuple(plugins), partition_size=ex.partition_size)


def _agreement(results: dict[str, ExplainerResult]) -> list[Agreement]:
    ranked = {n: r.feature_importance for n, r in results.items() if r.status == "ok" and r.feature_importance}
    names = list(ranked)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            sa = {s.feature: s.score for s in ranked[a]}
            sb = {s.feature: s.score for s in ranked[b]}
            common = [f for f in sa if f in sb]
            tau = kendall_tau(np.array([sa[f] for f in common]), np.array([sb[f] for f in common]))
            overlap = top_k_overlap([s.feature for s in ranked[a]], [s.feature for s in ranked[b]])
            out.append(Agreement(a, b, None if np.isnan(tau) else tau, None if np.isnan(overlap) else overlap))
    return out


def _reference_for(name: str, options: object, reference: Sample | None, data: Sample, base_dir: Path,
                   builder: InputBuilder) -> Sample:
    """The sample an explainer's reference pass reads: its own ``reference`` option table, else
    ``[reference]``, else the audited data itself."""
    own = getattr(options, "reference", None)
    if isinstance(own, dict) and own:
        sample = Sample(sample_config(own, f"explainers.{name}.reference", base_dir), f"explainers.{name}.reference")
        sample.check(list(builder.flat_branches), builder.jagged_branches)
        return sample
    return reference if reference is not None else data


def score_section(hist: np.ndarray, edges: np.ndarray) -> ReportSection:
    """The tagger's score distribution per class, from the executor's histograms."""
    from hepaudit.report.figures import score_histograms

    bkg, sig, other = hist
    centres = 0.5 * (edges[1:] + edges[:-1])
    data = {"bin_edges": edges.tolist(), "signal": sig.tolist(), "background": bkg.tolist()}
    text_parts = []
    for name, counts in (("signal", sig), ("background", bkg), ("unlabelled", other)):
        if counts.sum():
            text_parts.append(f"mean score of {name} jets {float((counts * centres).sum() / counts.sum()):.3f}")
    try:
        png = score_histograms(edges, sig if sig.sum() else None, bkg if bkg.sum() else None,
                               other if other.sum() else None)
        figures = [Figure("score_distribution.png", "Tagger score per class", png)]
    except Exception:  # a figure must never cost the report
        figures = []
    return ReportSection("score", "Tagger score", "; ".join(text_parts) + ".", data, figures)


def _draw_figures(runs: list[ExplainerRun], results: dict[str, ExplainerResult], warnings: list[str]) -> float:
    """Each explainer's ``draw(result)`` figures onto its result; the seconds it took.

    After every explainer has finished: drawing is the report's work, not the pass over
    the jets, and on Dask it happens here on the client, not on the worker that finished."""
    t0 = time.perf_counter()
    for run in runs:
        result = results.get(run.name)
        if run.explainer is None or result is None or result.status != "ok":
            continue
        try:
            result.figures.extend(run.explainer.draw(result))
        except Exception as exc:  # a plotting bug must not cost the report
            warnings.append(f"{run.name}: its figures could not be drawn: {type(exc).__name__}: {exc}")
    return time.perf_counter() - t0


def audit(config: str | Path | AuditConfig, *, out: str | Path | None = "hepaudit-report",
          explainers: Sequence[str] | None = None, max_jets: int | None = None, seed: int | None = None,
          force: bool = False, disable: Sequence[str] = (), progress: bool | None = None,
          debug: bool = False, plugins: Sequence[tuple[str, object]] = (), executor: str | None = None,
          scheduler: object = None, workers: int | None = None) -> AuditReport:
    """Run an audit and return its report; with ``out`` set, also write it there.

    :param config: an audit TOML file, or an :class:`AuditConfig`.
    :param out: output folder (report.json, report.html, figures/, per_jet.root); None
        writes nothing and only returns the report.
    :param explainers: run only these (default: every ``[explainers.NAME]`` table).
    :param max_jets: cap on audited jets (overrides ``data.max_jets``).
    :param seed: seed for stochastic explainers (overrides ``execution.seed``).
    :param force: overwrite a non-empty output folder.
    :param disable: plugin names to block.
    :param progress: progress bars on stderr (default: the config's ``execution.progress``).
    :param plugins: extra ``(name, plugin)`` objects to register, e.g. from a notebook.
    :param executor: ``"local"`` or ``"dask"`` (overrides ``execution.executor``).
    :param scheduler: a Dask scheduler address or a ``distributed.Client`` (implies ``executor="dask"``).
    :param workers: start a local Dask cluster of this many worker processes (implies ``executor="dask"``).
    """
    t_start = time.perf_counter()
    cfg = config if isinstance(config, AuditConfig) else load_config(config)
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
        # a distributed.Client object is not config: it goes to the executor as it is
        address = scheduler if isinstance(scheduler, str) else None
        changes = {"scheduler": address, "workers": None} if scheduler is not None else \
            {"workers": workers, "scheduler": None}
        cfg = replace(cfg, execution=replace(cfg.execution, **changes))
    if executor is not None:
        if executor not in ("local", "dask"):
            raise ConfigError(f"executor: expected 'local' or 'dask', found {executor!r}")
        cfg = replace(cfg, execution=replace(cfg.execution, executor=executor))
    host = PluginHost(disable=disable, extra=plugins)

    # Which explainers, with which validated options: all before reading any data.
    names = list(explainers) if explainers else list(cfg.explainers)
    if not names:
        raise ConfigError("no explainers to run: add [explainers.NAME] tables or pass --explainer NAME")
    for name in cfg.explainers:
        host.explainer_class(name)  # unknown tables are errors too, not silently ignored
    classes = {name: host.explainer_class(name) for name in names}
    options = {name: parse_table(cls.Options, cfg.explainers.get(name, {}), f"explainers.{name}")
               for name, cls in classes.items()}

    tagger = Tagger(cfg.model)
    builder = InputBuilder(cfg.inputs, host.recipes().recipes, tagger.info.inputs)
    sample = Sample(cfg.data, "data")
    needed_flat = list(builder.flat_branches) + [b for b in (cfg.data.label, cfg.data.weight) if b]
    skip_corrupt = cfg.execution.skip_corrupt
    sample.check(needed_flat, builder.jagged_branches, skip_corrupt=skip_corrupt)
    if sample.n_entries == 0:
        raise DataError(f"{', '.join(cfg.data.files)}: no jets selected (tree {cfg.data.tree!r} has "
                        f"{sum(f.entries for f in sample.files)} entries, max_jets = {cfg.data.max_jets})")
    reference = None
    if cfg.reference is not None:
        reference = Sample(cfg.reference, "reference")
        reference.check(list(builder.flat_branches), builder.jagged_branches)

    warnings: list[str] = list(builder.warnings)  # e.g. CMS variables set to pad
    n_sig = n_bkg = 0
    if cfg.data.label:
        n_sig, n_bkg, values = _label_counts(sample, cfg.data.label, skip_corrupt)
        if not values <= {0, 1}:
            raise DataError(f"data.label: branch {cfg.data.label!r} must hold 0 (background) and 1 (signal); "
                            f"found values {sorted(values)[:6]}")
    base_dir = Path(cfg.source).parent if cfg.source else Path.cwd()
    out_dir = Path(out) if out is not None else None
    context = AuditContext(tagger=tagger, builder=builder, features=builder.features, groups=builder.groups(),
                           output_dir=out_dir, has_reference=reference is not None, config_dir=base_dir,
                           seed=cfg.execution.seed, has_labels=cfg.data.label is not None,
                           has_weights=cfg.data.weight is not None, n_jets=sample.n_entries,
                           n_signal=n_sig, n_background=n_bkg, warnings=warnings)

    runs: list[ExplainerRun] = []
    skipped: dict[str, str] = {}
    for name, cls in classes.items():
        if "labels" in cls.needs and not cfg.data.label:
            skipped[name] = "needs labels: set data.label to the branch with 1 = signal, 0 = background"
            continue
        if "labels" in cls.needs and (n_sig == 0 or n_bkg == 0):
            skipped[name] = (f"needs both classes, but data.label {cfg.data.label!r} has "
                             f"{n_sig} signal and {n_bkg} background jets")
            continue
        run = ExplainerRun(name=name, plugin=host.plugin_of(name))
        if "reference" in cls.needs:
            run.reference = _reference_for(name, options[name], reference, sample, base_dir, builder)
        runs.append(run)

    if out_dir is not None:
        prepare_output(out_dir, force)
    per_jet = PerJetWriter(out_dir / "per_jet.root") if out_dir is not None else None
    show = cfg.execution.progress if progress is None else progress
    job = Job(sample=sample, builder=builder, tagger=tagger, context=context, runs=runs, label=cfg.data.label,
              weight=cfg.data.weight, nonfinite=cfg.data.nonfinite, per_jet=per_jet,
              progress=Progress(terminal_bars(show)), debug=debug,
              keep_arrays=any("arrays" in classes[r.name].needs for r in runs))
    executor = make_executor(cfg, disable, plugins, None if isinstance(scheduler, str) else scheduler)
    try:
        t_stats = time.perf_counter()
        if any("input_mean" in classes[r.name].needs for r in runs):
            stats = executor.input_stats(reference or sample, job)  # type: ignore[attr-defined]
            context.input_mean = stats.mean()
            context.feature_range = stats.feature_range()
            warnings += stats.warnings(builder.features)
        stats_s = time.perf_counter() - t_stats

        for run in runs:  # instantiate after x̄ is known: explainers may read it in __init__
            try:
                run.explainer = classes[run.name](options[run.name], context)
            except ConfigError:
                raise
            except Exception as exc:  # a plugin's bug: that explainer fails, the audit goes on
                run.error = f"{type(exc).__name__}: {exc}"
        outcome = executor.run(job)  # type: ignore[attr-defined]
    except BaseException:
        if per_jet is not None:
            per_jet.abort()
        raise
    finally:
        if hasattr(executor, "close"):
            executor.close()
    warnings += outcome.warnings
    skipped_files = sample.skipped + [s for s in outcome.skipped if s[0] not in {p for p, _ in sample.skipped}]
    for _path, reason in skipped_files:
        warnings.append(f"skipped an unreadable file (execution.skip_corrupt = true): {reason}")
    if outcome.skipped and cfg.data.label:  # files left out while auditing: count the labels of the audited jets
        n_bkg, n_sig = int(outcome.score_hist[0].sum()), int(outcome.score_hist[1].sum())
    if outcome.n_dropped:
        warnings.append(f"{outcome.n_dropped} jets with NaN/inf inputs or scores were left out (data.nonfinite = "
                        "\"drop\"); per_jet.root lists the audited jets' entry numbers in `entry`")

    results: dict[str, ExplainerResult] = {}
    for name in names:
        if name in skipped:
            results[name] = ExplainerResult(name=name, status="skipped", error=skipped[name],
                                            plugin=host.plugin_of(name), options=as_table(options[name]))
            continue
        run = next(r for r in runs if r.name == name)
        if run.error is not None or run.result is None:
            result = ExplainerResult(name=name, status="failed", error=run.error or "no result",
                                     options=as_table(options[name]))
        else:
            result = run.result
        result.plugin = run.plugin
        result.runtime_s = run.seconds
        results[name] = result
        if per_jet is not None:
            for tree, columns in result.trees.items():
                per_jet.add_tree(tree, columns)
        warnings += [f"{name}: {w}" for w in result.warnings]

    if per_jet is not None:
        per_jet.close()
    figures_s = _draw_figures(runs, results, warnings)
    report = AuditReport(
        hepaudit_version=__version__,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        config=as_table(cfg),
        model={**tagger.info.to_dict(), "score": tagger.score_spec.describe()},
        data={"files": [f for f in sample.summary() if f["path"] not in {p for p, _ in outcome.skipped}],
              "skipped_files": [p for p, _ in skipped_files] or None, "tree": cfg.data.tree, "n_jets": outcome.n_jets,
              "n_signal": n_sig, "n_background": n_bkg, "label": cfg.data.label, "weight": cfg.data.weight,
              "reference": reference.summary() if reference else None},
        features=builder.features,
        explainers=results,
        agreement=_agreement(results),
        per_jet="per_jet.root" if per_jet is not None and per_jet.entries else None,
        warnings=warnings,
        groups={g: [builder.features[k] for k in ks] for g, ks in builder.groups().items()},
        output_dir=str(out_dir) if out_dir else None,
    )
    report.sections = [score_section(outcome.score_hist, SCORE_BINS)] + host.report_sections(report)
    report.gates = evaluate_gates(cfg.gates, report)
    report.timing = {"total_s": time.perf_counter() - t_start, "read_s": outcome.read_s,
                     "chunks_read": outcome.chunks_read,
                     "input_stats_s": stats_s, "inference_s": tagger.inference_s,
                     **{f"{n}_s": r.runtime_s for n, r in results.items()}, "figures_s": figures_s}
    if out_dir is not None:
        from hepaudit.report.writer import write_report

        write_report(report, out_dir)
    return report

