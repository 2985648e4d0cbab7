"""The plan of an audit: everything decided and checked before the first jet is read.

:func:`~hepaudit.run.overrides.apply_overrides` first folds the keyword arguments of
:func:`hepaudit.audit` (and the CLI's flags) into the config. :meth:`AuditPlan.build` then resolves the explainers and
validates their options, opens the model, builds the input layout, checks the files and
branches, counts the labels, decides which explainers are skipped (and why) and which read
a reference sample, and holds the facts every process shares
(:class:`~hepaudit.explainers.base.AuditFacts`). A bad config or a missing branch fails
here with exit code 2, before any output is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hepaudit.config import AuditConfig, sample_config
from hepaudit.data.builders import InputBuilder
from hepaudit.data.reading import CorruptFileError, Sample
from hepaudit.data.stats import InputFacts
from hepaudit.errors import ConfigError, DataError, ModelError, pointed_at
from hepaudit.executors.local import Job
from hepaudit.explainers.base import AuditContext, Explainer
from hepaudit.guards import one_class_per_file
from hepaudit.model.session import Tagger
from hepaudit.options import parse_table
from hepaudit.plugins import PluginHost
from hepaudit.report.per_jet import PerJetSink
from hepaudit.results import Finding, FindingLevel
from hepaudit.run.lifecycle import ExplainerRun, describe_error
from hepaudit.run.progress import Progress


def label_counts(sample: Sample, label: str, skip_corrupt: bool = False
                 ) -> tuple[int, int, set[float], dict[str, set[float]]]:
    """Signal and background counts from the label branch alone (cheap: one branch), every
    value the branch holds (exactly: 0.5 is not 0, NaN is reported), and the values per file.

    With ``skip_corrupt`` a file whose label branch cannot be read is dropped from the sample.
    """
    while True:
        n_sig = n_bkg = 0
        values: set[float] = set()
        per_file: dict[str, set[float]] = {}
        try:
            for raw in sample.chunks([label]):
                lab = np.asarray(raw.arrays[label])
                seen = set(np.unique(lab).astype(np.float64).tolist())
                values |= seen
                per_file.setdefault(str(raw.file), set()).update(seen)
                n_sig += int((lab == 1).sum())
                n_bkg += int((lab == 0).sum())
        except CorruptFileError as exc:
            if not skip_corrupt:
                raise
            sample.drop(exc.path, str(exc))  # and count again: entry numbers and max_jets move
            continue
        return n_sig, n_bkg, values, per_file


@dataclass
class AuditPlan:
    """What an audit will do, validated: explainers and options, model, inputs, samples, facts."""

    config: AuditConfig
    host: PluginHost
    names: list[str]  # explainers in report order
    classes: dict[str, type[Explainer[Any]]]
    options: dict[str, Any]
    tagger: Tagger
    builder: InputBuilder
    sample: Sample
    reference: Sample | None
    context: AuditContext
    runs: list[ExplainerRun]  # the explainers that run
    skipped: dict[str, str]  # explainer -> why it does not run
    warnings: list[str] = field(default_factory=list)
    debug: bool = False
    # what the guards found about the config and the data (hepaudit/guards.py): warnings that
    # also open the report's findings
    checks: list[Finding] = field(default_factory=list)
    input_facts: InputFacts | None = None  # from the x̄ pass, when it ran
    # drawing helpers started when the audit began (hepaudit.report.drawing.started_early),
    # for the report's figure pool to take
    figure_helpers: list[Any] = field(default_factory=list)

    def check(self, kind: str, level: FindingLevel, text: str | None) -> None:
        """Record a guard's sentence (if any) as a warning and a finding."""
        if text:
            self.warnings.append(text)
            self.checks.append(Finding(kind, level, text))

    @classmethod
    def build(cls, cfg: AuditConfig, host: PluginHost, explainers: Sequence[str] | None = None,
              out_dir: Path | None = None, debug: bool = False, arrays: Any = None) -> AuditPlan:
        """The validated plan. What fails here is in what the user wrote or pointed at (a file,
        tree, branch, model or shape), found before any jet is read: exit code 2. ``arrays``:
        the audited jets from memory instead of ``data.files`` (:mod:`hepaudit.data.in_memory`)."""
        try:
            return cls._build(cfg, host, explainers, out_dir, debug, arrays)
        except (DataError, ModelError) as exc:
            raise pointed_at(exc) from None

    @classmethod
    def _build(cls, cfg: AuditConfig, host: PluginHost, explainers: Sequence[str] | None,
               out_dir: Path | None, debug: bool, arrays: Any = None) -> AuditPlan:
        names = list(explainers) if explainers else list(cfg.explainers)
        if not names:
            raise ConfigError("no explainers to run: add [explainers.NAME] tables or pass --explainer NAME")
        for name in cfg.explainers:
            host.explainer_class(name)  # unknown tables are errors too, not silently ignored
        classes = {name: host.explainer_class(name) for name in names}
        options: dict[str, Any] = {name: parse_table(c.Options, cfg.explainers.get(name, {}), f"explainers.{name}")
                   for name, c in classes.items()}
        tagger = Tagger(cfg.model)
        builder = InputBuilder(cfg.inputs, host.recipes().recipes, tagger.info.inputs)
        sample = _audited_sample(cfg, builder, arrays)
        reference = None
        if cfg.reference is not None:
            reference = Sample(cfg.reference, "reference")
            reference.prepare(list(builder.flat_branches), builder.jagged_branches)
        n_sig = n_bkg = 0
        per_file: dict[str, set[float]] = {}
        if cfg.data.label:
            n_sig, n_bkg, values, per_file = label_counts(sample, cfg.data.label, cfg.execution.skip_corrupt)
            if not values <= {0.0, 1.0}:  # NaN is in no set of numbers: it is reported too
                shown = sorted(values, key=lambda v: (np.isnan(v), v))
                listed = ", ".join(f"{v:g}" for v in shown[:6]) + (", ..." if len(shown) > 6 else "")
                raise DataError(f"data.label: branch {cfg.data.label!r} must hold exactly 0 (background) and 1 "
                                f"(signal); found values [{listed}]")
        base_dir = Path(cfg.source).parent if cfg.source else Path.cwd()
        warnings: list[str] = list(host.problems) + list(builder.warnings)  # broken plugins; CMS variables set to pad
        if tagger.provider_warning:  # e.g. CUDA asked for, CPU-only onnxruntime installed
            warnings.append(tagger.provider_warning)
        context = AuditContext(tagger=tagger, builder=builder, features=builder.features, groups=builder.groups(),
                               output_dir=out_dir, has_reference=reference is not None, config_dir=base_dir,
                               seed=cfg.execution.seed, bootstrap=cfg.execution.bootstrap,
                               has_labels=cfg.data.label is not None,
                               has_weights=cfg.data.weight is not None, n_jets=sample.n_entries,
                               n_signal=n_sig, n_background=n_bkg, warnings=warnings)
        plan = cls(cfg, host, names, classes, options, tagger, builder, sample, reference, context, [], {},
                   warnings, debug)
        plan._choose_runs()
        plan.check("config", "warning", one_class_per_file(per_file))
        return plan

    def _choose_runs(self) -> None:
        """Skip the explainers the data cannot serve (with the reason); pick each one's reference."""
        label = self.config.data.label
        n_sig, n_bkg = self.context.n_signal, self.context.n_background
        for name, c in self.classes.items():
            needs = c.needs_for(self.options[name])
            if "labels" in needs and not label:
                self.skipped[name] = "needs labels: set data.label to the branch with 1 = signal, 0 = background"
                continue
            if "labels" in needs and (n_sig == 0 or n_bkg == 0):
                self.skipped[name] = (f"needs both classes, but data.label {label!r} has "
                                      f"{n_sig} signal and {n_bkg} background jets")
                continue
            run = ExplainerRun(name=name, plugin=self.host.plugin_of(name))
            if "reference" in needs:
                run.reference = self._reference_for(name)
            self.runs.append(run)

    def _reference_for(self, name: str) -> Sample:
        """The sample an explainer's reference pass reads: the table in its ``reference_option``
        (``reference`` by default), else ``[reference]``, else the audited data itself."""
        option = self.classes[name].reference_option
        own = getattr(self.options[name], option, None) if option else None
        if isinstance(own, dict) and own:
            base_dir = self.context.config_dir or Path.cwd()
            where = f"explainers.{name}.{option}"
            sample = Sample(sample_config(own, where, base_dir), where)
            sample.prepare(list(self.builder.flat_branches), self.builder.jagged_branches)
            return sample
        return self.reference if self.reference is not None else self.sample

    def input_paths(self) -> list[Path]:
        """The files the audit reads: config, model, data and reference files."""
        paths = [Path(self.config.model.path), *self.sample.paths]
        if self.config.source:
            paths.append(Path(self.config.source))
        for run in self.runs:
            if run.reference is not None:
                paths += run.reference.paths
        return paths

    def needs(self, need: str) -> bool:
        """Whether any explainer that runs declares ``need``."""
        return any(need in self.classes[r.name].needs_for(self.options[r.name]) for r in self.runs)

    def job(self, per_jet: PerJetSink | None, progress: Progress) -> Job:
        cfg = self.config
        return Job(sample=self.sample, builder=self.builder, tagger=self.tagger, context=self.context,
                   runs=self.runs, label=cfg.data.label, weight=cfg.data.weight, nonfinite=cfg.data.nonfinite,
                   per_jet=per_jet, progress=progress, debug=self.debug, keep_arrays=self.needs("arrays"),
                   per_jet_inputs=cfg.per_jet.inputs)

    def instantiate(self) -> None:
        """Each run's explainer, made after x̄ is known (explainers may read it in ``__init__``);
        a plugin's bug in a constructor fails that explainer, a ConfigError fails the audit."""
        for run in self.runs:
            try:
                run.explainer = self.classes[run.name](self.options[run.name], self.context)
            except ConfigError:
                raise
            except Exception as exc:  # that explainer fails, the audit goes on
                run.fail(describe_error(exc, self.debug))
        self.context.peers = {r.name: r.explainer for r in self.runs if r.explainer is not None}


def _audited_sample(cfg: AuditConfig, builder: InputBuilder, arrays: Any = None) -> Sample:
    if arrays is not None:
        from hepaudit.data.in_memory import ArraySample

        if cfg.execution.executor != "local":
            raise ConfigError("arrays= runs on the local executor: a Dask cluster would need the arrays on its "
                              "workers (write them to a ROOT file and list it in data.files)")
        sample: Sample = ArraySample(cfg.data, arrays)
    else:
        sample = Sample(cfg.data, "data")
    needed_flat = list(builder.flat_branches) + [b for b in (cfg.data.label, cfg.data.weight) if b]
    sample.prepare(needed_flat, builder.jagged_branches, skip_corrupt=cfg.execution.skip_corrupt)
    if sample.n_entries == 0:
        cut = f", cut = {cfg.data.cut!r}" if cfg.data.cut else ""
        where = ", ".join(f.path for f in sample.files) or ", ".join(cfg.data.files)
        raise DataError(f"{where}: no jets selected (tree {cfg.data.tree!r} has "
                        f"{sum(f.entries for f in sample.files)} entries, max_jets = {cfg.data.max_jets}{cut})")
    return sample
