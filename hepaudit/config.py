"""The audit config: TOML in, typed and validated :class:`AuditConfig` out.

Follows docs/contract.md section 2. Paths are resolved relative to the config file;
unknown keys and wrong types raise :class:`~hepaudit.errors.ConfigError` naming the key.
Explainer tables are kept as raw dicts here and validated against each explainer's own
options class once the plugins are known.
"""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from hepaudit.data.preprocess_json import CmsVariable, read_preprocess_json
from hepaudit.errors import ConfigError, close_matches
from hepaudit.options import parse_table

InputKind = Literal["jet", "constituents", "mask", "cms"]
Layout = Literal["flat", "particles", "channels"]


@dataclass(frozen=True)
class ClassSumScore:
    """A class-sum discriminant S / (S + B) over named (or numbered) output columns."""

    signal: tuple[str | int, ...]
    background: tuple[str | int, ...]

    def __post_init__(self) -> None:
        if not self.signal or not self.background:
            raise ValueError("score: signal and background must each name at least one class")


@dataclass(frozen=True)
class ModelConfig:
    path: str  # the .onnx file, relative to the config file
    output: str | None = None  # the ONNX output to read; default: the model's first
    score: int | str | ClassSumScore | None = None  # a column, a class name, or a class sum
    classes: tuple[str, ...] | None = None  # names of the output's columns
    batch_size: int = 65536  # rows per onnxruntime call; see README "Memory and speed"
    # onnxruntime execution providers in order of preference; CPU is always the last fallback
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    threads: int = 0  # onnxruntime intra-op threads; 0 = onnxruntime's default
    # occluded passes (dauc, mad) compute a first dense layer once per block of jets, not once
    # per occlusion (docs/methods.md); false: every occluded pass runs the whole graph
    factor_first_layer: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if isinstance(self.score, str) and self.classes is not None and self.score not in self.classes:
            raise ValueError(f"score: {self.score!r} is not one of the classes {list(self.classes)}")


@dataclass(frozen=True)
class SampleConfig:
    """A set of ROOT files and a tree: the audited ``[data]`` or a ``[reference]``."""

    files: tuple[str, ...]  # ROOT files (glob patterns allowed), relative to the config file
    tree: str = "jets"  # the TTree holding one entry per jet
    label: str | None = None  # truth branch: 1 signal, 0 background (needed by dauc and calibration)
    weight: str | None = None  # per-jet weight branch
    max_jets: int | None = None  # audit at most this many jets (after the cut; both classes kept)
    step_size: int = 100_000  # jets read and processed at once (memory follows)
    nonfinite: Literal["fail", "drop"] = "fail"  # NaN/inf in inputs or scores
    cut: str | None = None  # a selection over flat branches (hepaudit/data/selection.py)

    def __post_init__(self) -> None:
        if not self.files:
            raise ValueError("files: give at least one file or glob")
        if self.cut is not None:
            from hepaudit.data.selection import Cut

            try:
                Cut(self.cut, "cut")  # a syntax error is a config error, before any file is opened
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        if self.step_size < 1:
            raise ValueError("step_size must be at least 1")
        if self.max_jets is not None and self.max_jets < 0:
            raise ValueError("max_jets must not be negative")


@dataclass(frozen=True)
class MomentumBranches:
    """Jagged constituent branches, Cartesian (px, py, pz, energy) or (pt, eta, phi, mass)."""

    px: str | None = None  # Cartesian: px, py, pz, energy
    py: str | None = None
    pz: str | None = None
    energy: str | None = None
    pt: str | None = None  # or pt, eta, phi (mass optional)
    eta: str | None = None
    phi: str | None = None
    mass: str | None = None

    def __post_init__(self) -> None:
        cart = (self.px, self.py, self.pz, self.energy)
        polar = (self.pt, self.eta, self.phi, self.mass)
        if not (all(cart) and not any(polar)) and not (all(polar) and not any(cart)):
            raise ValueError("momentum: give either px, py, pz, energy or pt, eta, phi, mass")

    @property
    def branches(self) -> tuple[str, ...]:
        cart = (self.px, self.py, self.pz, self.energy)
        return tuple(b for b in (cart if all(cart) else (self.pt, self.eta, self.phi, self.mass)) if b)


@dataclass(frozen=True)
class InputConfig:
    """One ONNX model input and how to build it from the tree."""

    name: str  # the ONNX input's name ("*" with kind = "cms": every input preprocess.json lists)
    kind: InputKind  # jet-level branches, constituents, a constituent mask, or a CMS preprocess.json
    momentum: MomentumBranches | None = None  # the constituents' four-momentum branches
    features: tuple[str, ...] | None = None  # per-constituent features, in the model's order
    max_particles: int | None = None  # constituents kept per jet (padded with zeros)
    preprocess: str | None = None  # a preprocessing recipe, e.g. "topodnn" (hepaudit plugins --all lists them)
    layout: Layout = "flat"  # (N, P·F) flat, (N, P, F) particles or (N, F, P) channels
    of: str | None = None  # for masks: the constituents input it masks
    branches: tuple[str, ...] | None = None  # for kind = "jet"
    # kind = "cms" (hepaudit/data/cms.py): CMSSW's preprocess.json, and what each variable is made of
    preprocess_json: str | None = None  # CMSSW's preprocess.json, relative to the config file
    # each preprocess.json variable's source: a branch name, a derived feature, or a number
    variables: dict[str, str | float | CmsVariable] | None = None
    pid: str | None = None  # jagged PDG id branch, for the particle-type flags (is_muon, ...)

    def __post_init__(self) -> None:
        if self.kind == "cms" and not self.preprocess_json and not self.variables:
            raise ValueError(f"input {self.name!r} has kind = \"cms\" and needs preprocess_json or variables = {{...}}")
        if self.name == "*" and (self.kind != "cms" or not self.preprocess_json):
            raise ValueError("name = \"*\" (every input of a preprocess.json) needs kind = \"cms\" and preprocess_json")
        if self.kind == "jet" and not self.branches:
            raise ValueError(f"input {self.name!r} has kind = \"jet\" and needs branches = [...]")
        if self.kind == "constituents":
            if self.momentum is None:
                raise ValueError(f"input {self.name!r} has kind = \"constituents\" and needs momentum = {{...}}")
            if not self.max_particles or self.max_particles < 1:
                raise ValueError(f"input {self.name!r} needs max_particles >= 1")
            if not self.features and not self.preprocess:
                raise ValueError(f"input {self.name!r} needs features = [...] or a preprocess recipe")


@dataclass(frozen=True)
class GateRule:
    min: float | None = None  # fail when the value is below this
    max: float | None = None  # fail when the value is above this

    def __post_init__(self) -> None:
        if self.min is None and self.max is None:
            raise ValueError("a gate needs min or max")


@dataclass(frozen=True)
class ExecutionConfig:
    """``[execution]``: seed, progress bars, and where the chunk loop runs.

    ``executor = "dask"`` runs it as Dask tasks over file/entry ranges: on the cluster at
    ``scheduler`` (an address such as ``tcp://host:8786``), else on a local cluster of
    ``workers`` processes with ``threads_per_worker`` threads each. ``partition_size`` is
    the number of jets per task (rounded up to a multiple of ``data.step_size``; default:
    a whole file, or 4 chunks, whichever is smaller). ``skip_corrupt`` leaves unreadable
    files out of the audit, naming them in the report's warnings, instead of failing.
    ``cache_mb``: when the x̄ pass reads the audited data and all of it (branches and built
    inputs) fits in this many MB, the audit pass replays it from memory instead of reading
    and building it again (local executor; 0 turns this off). ``prefetch``: the local executor
    reads and builds the next chunk on a thread while the current one is scored (one chunk
    more in memory); Dask workers do not (their parallelism is the cluster's processes).
    ``reuse_heap``: Dask tasks take their arrays from glibc's heap instead of fresh mappings
    (:mod:`hepaudit.executors.heap`).
    """

    seed: int = 0  # seed of every sample, bootstrap and stochastic explainer
    progress: bool = True  # progress bars on stderr (off when stderr is not a terminal)
    executor: Literal["local", "dask"] = "local"  # where the chunk loop runs
    scheduler: str | None = None  # Dask: a scheduler address such as tcp://host:8786
    workers: int | None = None  # Dask without a scheduler: a local cluster of this many processes
    threads_per_worker: int = 1  # Dask local cluster: threads per worker process
    # Dask: jets per task, rounded up to a multiple of data.step_size (default: a file, or 4 chunks)
    partition_size: int | None = None
    skip_corrupt: bool = False  # leave unreadable files out (named in the warnings) instead of failing
    # replay the audited data from memory when it fits in this many MB (0: read it again)
    cache_mb: int = 512
    prefetch: bool = True  # read and build the next chunk on a thread while one is scored
    # Dask: while a task runs, glibc reuses its heap for arrays up to 32 MB (faster; the workers'
    # peak memory is higher), then hands it back; false: Dask's MALLOC_TRIM_THRESHOLD_ as it is
    reuse_heap: bool = True
    bootstrap: int = 32  # Poisson bootstrap replicates behind every error bar; 0 turns them off

    def __post_init__(self) -> None:
        if self.cache_mb < 0:
            raise ValueError("cache_mb must not be negative")
        if self.bootstrap < 0 or self.bootstrap == 1:
            raise ValueError("bootstrap: 0 (off) or at least 2 replicates")
        if self.workers is not None and self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.threads_per_worker < 1:
            raise ValueError("threads_per_worker must be at least 1")
        if self.partition_size is not None and self.partition_size < 1:
            raise ValueError("partition_size must be at least 1")
        if self.scheduler is not None and self.workers is not None:
            raise ValueError("give either scheduler (an existing cluster) or workers (a local cluster), not both")


@dataclass(frozen=True)
class ReportConfig:
    """``[report]``: how the report's figures look and the files they are saved as."""

    # an experiment's plotting style from mplhep ("cms", "atlas", "lhcb", "alice"), or "matplotlib"
    style: Literal["cms", "atlas", "lhcb", "alice", "matplotlib"] = "cms"
    # figures/ holds each figure as a PNG, and as PDF and SVG too when listed (for papers and slides)
    figure_formats: tuple[Literal["png", "pdf", "svg"], ...] = ("png",)
    # dots per inch of the PNGs (report.html embeds them): 200 for slides; drawing time and the
    # page's size grow with its square
    dpi: int = 100
    # processes drawing the report's figures (never more than the cores): above 1, a fresh Python
    # interpreter and, on Linux, copies of it forked once it is set up draw them while this one
    # builds the report (elsewhere interpreters draw beside this one); 1: all in this one
    figure_processes: int = 2

    def __post_init__(self) -> None:
        if not 30 <= self.dpi <= 600:
            raise ValueError(f"dpi: expected 30 to 600, found {self.dpi}")
        if not 1 <= self.figure_processes <= 64:
            raise ValueError(f"figure_processes: expected 1 to 64, found {self.figure_processes}")


@dataclass(frozen=True)
class PerJetConfig:
    """``[per_jet]``: what per_jet.root holds beside each explainer's columns."""

    # also the model's inputs as it saw them (after preprocessing): input_{input}[particles][features]
    # for a constituents input, input_{feature} for jet-level features (a SHAP waterfall's values)
    inputs: bool = False


@dataclass(frozen=True)
class AuditConfig:
    """The whole audit, as run. ``source`` is the config file (None when built in code)."""

    model: ModelConfig
    data: SampleConfig
    inputs: tuple[InputConfig, ...]
    explainers: dict[str, dict[str, Any]] = field(default_factory=dict)
    reference: SampleConfig | None = None
    gates: dict[str, GateRule] = field(default_factory=dict)
    execution: ExecutionConfig = ExecutionConfig()
    per_jet: PerJetConfig = PerJetConfig()
    report: ReportConfig = ReportConfig()
    source: str | None = None


_TOP_LEVEL = ("model", "data", "inputs", "explainers", "reference", "gates", "execution", "per_jet", "report")


def _resolve_path(path: str, base: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p))


def resolve_files(patterns: tuple[str, ...], where: str) -> list[Path]:
    """Expand globs (already absolute) in order; a pattern matching nothing is an error."""
    files: list[Path] = []
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise ConfigError(f"{where}: the glob {pattern!r} matches no file")
            files.extend(Path(m) for m in matches)
        else:
            files.append(Path(pattern))
    seen: dict[str, Path] = {}
    for path in files:  # the same file twice would audit its jets twice, each counted as new evidence
        key = os.path.realpath(path)
        if key in seen:
            same = f"as {str(seen[key])!r} and {str(path)!r}" if seen[key] != path else f"{str(path)!r}"
            raise ConfigError(f"{where}: the same file is listed twice ({same}); list each file once")
        seen[key] = path
    return files


def sample_config(table: Any, where: str, base: Path) -> SampleConfig:
    """A ``[data]``-like table (files, tree, label, ...) validated, paths resolved from ``base``."""
    if not isinstance(table, dict):
        raise ConfigError(f"[{where}]: expected a table")
    sample = parse_table(SampleConfig, table, where)
    return replace(sample, files=tuple(_resolve_path(f, base) for f in sample.files))


def config_from_dict(raw: dict[str, Any], base: Path, source: str | None = None) -> AuditConfig:
    """Validate a parsed TOML document; relative paths are taken from ``base``."""
    for key in raw:
        if key not in _TOP_LEVEL:
            raise ConfigError(f"unknown key [{key}]{close_matches(key, _TOP_LEVEL)}")
    for key in ("model", "data", "inputs"):
        if key not in raw:
            raise ConfigError(f"missing [{key}] table" if key != "inputs" else "missing [[inputs]] tables")
    model = parse_table(ModelConfig, raw["model"], "model")
    model = replace(model, path=_resolve_path(model.path, base))
    data = sample_config(raw["data"], "data", base)
    if not isinstance(raw["inputs"], list):
        raise ConfigError("inputs: expected [[inputs]] tables (an array of tables)")
    inputs = tuple(parse_table(InputConfig, t, f"inputs[{i}]") for i, t in enumerate(raw["inputs"]))
    inputs, model = _cms_inputs(inputs, model, base)
    names = [i.name for i in inputs]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ConfigError(f"inputs: the ONNX input {sorted(dupes)[0]!r} is configured twice")
    explainers = raw.get("explainers", {})
    if not isinstance(explainers, dict) or not all(isinstance(v, dict) for v in explainers.values()):
        raise ConfigError("explainers: expected [explainers.NAME] tables")
    reference = sample_config(raw["reference"], "reference", base) if "reference" in raw else None
    gates_raw = raw.get("gates", {})
    if not isinstance(gates_raw, dict):
        raise ConfigError("gates: expected a table of \"explainer.field\" = { min = ..., max = ... }")
    for k, v in gates_raw.items():
        if not isinstance(v, dict):
            raise ConfigError(f"gates.{k}: expected a table such as {{ min = 0.9 }} or {{ max = 0.1 }}, "
                              f"found {v!r}")
    gates = {k: parse_table(GateRule, v, f"gates.{k}") for k, v in gates_raw.items()}
    execution = parse_table(ExecutionConfig, raw.get("execution", {}), "execution")
    per_jet = parse_table(PerJetConfig, raw.get("per_jet", {}), "per_jet")
    report = parse_table(ReportConfig, raw.get("report", {}), "report")
    return AuditConfig(model=model, data=data, inputs=inputs, explainers=dict(explainers), reference=reference,
                       gates=gates, execution=execution, per_jet=per_jet, report=report, source=source)


def _cms_inputs(inputs: tuple[InputConfig, ...], model: ModelConfig, base: Path
                ) -> tuple[tuple[InputConfig, ...], ModelConfig]:
    """Resolve preprocess_json paths, expand ``name = "*"`` into one table per input the json
    lists (tables naming an input themselves win), and take the class names from the json's
    ``flav_names`` when ``model.classes`` is not set."""
    resolved = tuple(replace(i, preprocess_json=_resolve_path(i.preprocess_json, base)) if i.preprocess_json else i
                     for i in inputs)
    explicit = {i.name for i in resolved if i.name != "*"}
    out: list[InputConfig] = []
    flav: tuple[str, ...] | None = None
    for cfg in resolved:
        if not cfg.preprocess_json:
            out.append(cfg)
            continue
        pre = read_preprocess_json(cfg.preprocess_json)
        flav = flav or pre.flav_names
        if cfg.name == "*":
            out += [replace(cfg, name=n) for n in pre.input_names if n not in explicit]
        else:
            out.append(cfg)
    if flav and model.classes is None:
        model = replace(model, classes=flav)
    return tuple(out), model


def load_config(path: str | Path) -> AuditConfig:
    """Read and validate an audit config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    try:
        return config_from_dict(raw, path.resolve().parent, source=str(path.resolve()))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
