"""Running a tagger: an onnxruntime session, the signal score and its logit, batching.

:class:`Tagger` is the only place hepaudit calls ``InferenceSession.run`` for the audited
model. It checks the configured inputs against the graph, forms the signal score (an
output column, or the class-sum discriminant S / (S + B)), exposes the logit tensor
feeding the score's Sigmoid/Softmax when it can, runs in batches (padding the last batch
for models whose batch dimension is fixed), and can return hidden tensors as extra
outputs, per jet: each exposed tensor's jet axis is learnt from the model on its first run
(:mod:`hepaudit.model.jet_axis`), so a tensor of jets times edges comes back as
(N, edges, ...) and one that has no per-jet view is left out and named in ``no_jet_axis``.
``raw_values`` gives the tensors as the graph holds them, for the backward pass. It keeps the
time spent inside onnxruntime so reports and benchmarks can quote it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hepaudit.config import ClassSumScore, ModelConfig
from hepaudit.errors import ConfigError, ModelError
from hepaudit.lazy import lazy_module
from hepaudit.model.graph import Head, ModelInfo, describe_model, find_head, load_model, with_extra_outputs
from hepaudit.model.jet_axis import ROWS, JetAxis, learn_jet_axis
from hepaudit.model.providers import CPU, resolve_providers

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort

    from hepaudit.model.first_layer import FactoredPasses
else:  # loaded on first use (hepaudit.lazy): registering plugins imports none of them
    onnx = lazy_module("onnx")
    ort = lazy_module("onnxruntime")

#: Rows per onnxruntime call for passes that go over the same jets many times (the occluded
#: units of ΔAUC and MAD, SHAP's coalitions, the OOD ensemble's members and autoencoder) before
#: the model has been measured, and the most any model gets. Once measured,
#: ``Tagger.cached_rows`` sizes the block from the model's tensors per jet so that a call's
#: tensors stay in a core's cache between calls (``model.footprint.cache_rows``): TopoDNN's
#: 3.7 kB a jet gives 1024 rows, DeepJet's 150 kB gives 16 on one thread (bench_blocks.py,
#: docs/dask.md).
CACHED_ROWS = 4096


#: reduce(name, per-jet value (m, ...), the batch's inputs) -> a smaller per-jet array (m, ...)
Reducer = Callable[[str, np.ndarray, Mapping[str, np.ndarray]], np.ndarray]


@dataclass
class ScoreSpec:
    """How the signal score is formed from the chosen output; ``describe`` goes to the report."""

    output: str
    column: int | None  # a single column (None: the output is 1-D or has one column)
    signal: tuple[int, ...] = ()
    background: tuple[int, ...] = ()
    head: Head | None = None
    classes: tuple[str, ...] | None = None

    @property
    def is_class_sum(self) -> bool:
        return bool(self.signal)

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"output": self.output}
        if self.is_class_sum:
            names = self.classes
            out["kind"] = "class_sum"
            out["signal"] = [names[i] if names else i for i in self.signal]
            out["background"] = [names[i] if names else i for i in self.background]
            out["formula"] = "S / (S + B)"
        else:
            out["kind"] = "column"
            out["column"] = self.column if self.column is not None else 0
            if self.classes and self.column is not None:
                out["class"] = self.classes[self.column]
        out["head"] = self.head.op if self.head else None
        out["logit"] = f"input of {self.head.op} ({self.head.logit})" if self.head else "log(f / (1 - f))"
        return out


@dataclass
class ModelOutputs:
    """One batch of results: score f(x) and logit z(x) per jet, and any extra tensors."""

    score: np.ndarray  # (N,) float64
    logit: np.ndarray  # (N,) float64
    extra: dict[str, np.ndarray] = field(default_factory=dict)


def _class_index(ref: str | int, classes: tuple[str, ...] | None, n_columns: int | None) -> int:
    if isinstance(ref, int):
        index = ref
    else:
        if not classes or ref not in classes:
            raise ConfigError(f"model.score: unknown class {ref!r}; set model.classes to name the output columns")
        index = classes.index(ref)
    if index < 0 or (n_columns is not None and index >= n_columns):
        raise ConfigError(f"model.score: column {index} is out of range for an output with {n_columns} columns")
    return index


def _within(score: object, classes: tuple[str, ...] | None, n_columns: int | None, width: int) -> bool:
    """Whether every column the score reads is among the first ``width``."""
    if isinstance(score, ClassSumScore):
        refs: list[str | int] = [*score.signal, *score.background]
    else:
        refs = [score if isinstance(score, (str, int)) else 0]
    return all(_class_index(r, classes, n_columns) < width for r in refs)


def _logsumexp(z: np.ndarray, cols: Sequence[int]) -> np.ndarray:
    sub = z[:, list(cols)].astype(np.float64)
    top = sub.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(sub - top).sum(axis=1, keepdims=True)))[:, 0]


class Tagger:
    """An ONNX tagger ready to score chunks of jets."""

    def __init__(self, config: ModelConfig, extra_outputs: Sequence[str] = (), *,
                 proto: onnx.ModelProto | None = None, info: ModelInfo | None = None) -> None:
        """``proto`` and ``info``: a graph to run instead of ``config.path``'s (the sanity check's
        randomised weights), described by ``info`` (default: described anew)."""
        self.config = config
        self.path = Path(config.path)
        #: the execution providers in use (model.providers less those this build lacks, then
        #: CPU) and the warning when some were left out (hepaudit.model.providers)
        self.providers, self.provider_warning = resolve_providers(config.providers)
        self.proto = load_model(self.path) if proto is None else proto
        self.info: ModelInfo = info if info is not None else describe_model(self.proto, self.path)
        output_names = [o.name for o in self.info.outputs]
        if not output_names:
            raise ModelError(f"{self.path}: the model declares no outputs: there is no score to audit")
        output = config.output or output_names[0]
        if output not in output_names:
            raise ConfigError(f"model.output: the model has no output {output!r} (outputs: {', '.join(output_names)})")
        out_info = next(o for o in self.info.outputs if o.name == output)
        n_columns = out_info.shape[-1] if len(out_info.shape) >= 2 and isinstance(out_info.shape[-1], int) else None
        self.score_spec = self._score_spec(output, n_columns)
        self._extra = list(extra_outputs)
        self._base_outputs = [output] + ([self.score_spec.head.logit] if self.score_spec.head else [])
        self.inference_s = 0.0
        self.n_runs = 0
        self._counting = threading.Lock()  # block-parallel passes run one tagger on several threads
        #: the tagger whose inference_s and n_runs this one's runs add to (a one-thread twin's parent)
        self._meter: Tagger = self
        self._one_thread: Tagger | None = None
        # per (outputs, per-jet input shapes): each output's per-jet shape and dtype, learnt from
        # the first run, so later chunks can be written by onnxruntime into preallocated arrays
        self._layouts: dict[tuple[object, ...], dict[str, tuple[tuple[int, ...], np.dtype]]] = {}
        # per layout: the exposed tensors' arrays reused by every ``scratch`` run (see ``run``)
        self._scratch: dict[tuple[object, ...], dict[str, np.ndarray]] = {}
        # idle onnxruntime threads sleep rather than busy-wait between runs: hepaudit interleaves
        # runs with numpy work, which spinning threads slow down on machines with few cores
        self.spinning = False
        #: exposed tensor -> its jet axis (learnt on the first run that returns it)
        self.jet_axes: dict[str, JetAxis | None] = {}
        #: exposed tensors that have no per-jet view, and why (they are left out of ``extra``)
        self.no_jet_axis: dict[str, str] = {}
        self._raw_sessions: dict[tuple[str, ...], ort.InferenceSession] = {}
        #: occluded passes compute a first dense layer once per block (:meth:`factored`)
        self.factor_first_layer = config.factor_first_layer
        self._factored: dict[str, FactoredPasses | None] = {}
        self._reducers: dict[str, Reducer] = {}
        self._raw: set[str] = set()
        #: rows per onnxruntime call that keep its intermediate tensors within the memory budget
        #: (model/footprint.py), learnt on the first run; None until then
        self.memory_rows: int | None = None
        #: rows per call for repeated passes that keep a call's tensors in cache (learnt with memory_rows)
        self._cache_rows: int | None = None
        self._session = self._make_session(self._base_outputs + self._extra)
        first = self.info.inputs[0].shape if self.info.inputs else ()
        self.fixed_batch: int | None = first[0] if first and isinstance(first[0], int) and first[0] > 0 else None

    # -- construction -------------------------------------------------------------------------
    def _score_spec(self, output: str, n_columns: int | None) -> ScoreSpec:
        cfg = self.config
        classes = cfg.classes
        if classes is not None and n_columns is not None and len(classes) != n_columns:
            raise ConfigError(f"model.classes: {len(classes)} names given but output {output!r} "
                              f"has {n_columns} columns")
        head = find_head(self.proto, output)
        if head is not None and head.columns is not None and not _within(cfg.score, classes, n_columns, head.columns):
            head = None  # the score reads columns the head does not make
        if isinstance(cfg.score, ClassSumScore):
            sig = tuple(_class_index(c, classes, n_columns) for c in cfg.score.signal)
            bkg = tuple(_class_index(c, classes, n_columns) for c in cfg.score.background)
            if head is not None and head.op != "Softmax":
                head = None
            return ScoreSpec(output, None, sig, bkg, head, classes)
        if cfg.score is None:
            if n_columns not in (None, 1):
                raise ConfigError(f"model.score: output {output!r} has {n_columns} columns; say which is the "
                                  "signal score (score = N) or give a class-sum "
                                  "(score = {signal = [...], background = [...]})")
            column = None
        else:
            column = _class_index(cfg.score, classes, n_columns)
        if head is not None and head.op == "Softmax" and n_columns is None:
            head = None
        return ScoreSpec(output, column, head=head, classes=classes)

    def _make_session(self, outputs: list[str], keep: bool = True, proto: onnx.ModelProto | None = None
                      ) -> ort.InferenceSession:
        """A session returning ``outputs`` of this tagger's graph (or of ``proto``, a graph cut from it)."""
        opts = ort.SessionOptions()
        if self.config.threads:
            opts.intra_op_num_threads = self.config.threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 4  # onnxruntime's own error log would repeat what the ModelError says
        if not self.spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        graph: onnx.ModelProto = with_extra_outputs(self.proto if proto is None else proto, outputs)
        try:
            session = ort.InferenceSession(graph.SerializeToString(), sess_options=opts,
                                           providers=self.providers)
        except Exception as exc:
            first_line = str(exc).splitlines()[0][:200]
            raise ModelError(f"{self.path}: onnxruntime cannot load the model ({first_line})") from None
        if keep:
            self._output_names = outputs
        return session

    def expose(self, names: Sequence[str], spinning: bool | None = None, reduce: Reducer | None = None) -> None:
        """Also return these intermediate tensors from every run (e.g. hidden layers for NAP).

        ``spinning=False``: onnxruntime's idle threads sleep instead of busy-waiting after a
        run (for every later run), for callers that do heavy numpy work between runs (the LRP
        and gradient backward), which spinning threads slow down on a machine with few cores.

        ``reduce(name, per_jet_value, batch_inputs)``: applied to each onnxruntime call's per-jet
        tensor before it is joined into the chunk's, so a large hidden tensor (ParticleNet's
        EdgeConv activations, megabytes a jet) is never held for a whole chunk. A tensor that
        another caller exposes as it is comes back unreduced to everyone.
        """
        for name in names:
            if reduce is None:
                self._raw.add(name)
                self._reducers.pop(name, None)
            elif name not in self._raw:
                self._reducers[name] = reduce
        new = [n for n in names if n not in self._extra]
        rebuild = bool(new)
        if spinning is False and self.spinning:
            self.spinning = False
            rebuild = True
        if rebuild:
            self._extra.extend(new)
            # a name may already be a base output (the head's logit): the session returns it once
            self._session = self._make_session(list(dict.fromkeys(self._base_outputs + self._extra)))
            self._raw_sessions.clear()

    @property
    def cached_rows(self) -> int:
        """Rows per call for repeated passes: the model's fixed batch, else rows whose tensors
        fit a core's cache (CACHED_ROWS until the model is measured; at most ``model.batch_size``)."""
        cached = self._cache_rows or CACHED_ROWS
        return self.fixed_batch or min(cached, self.config.batch_size, self.memory_rows or cached)

    def learn_footprint(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Measure the model's memory per jet once (a fixed batch is what it is)."""
        if self.memory_rows is not None or self.fixed_batch:
            return
        from hepaudit.model.footprint import bytes_per_jet, cache_rows, rows_within

        try:
            per_jet = bytes_per_jet(self.proto, {k: v[:1] for k, v in inputs.items()}, self.providers)
        except Exception:  # a graph that cannot expose every tensor: no cap, as before
            self.memory_rows = self.config.batch_size
            return
        self.memory_rows = rows_within(per_jet)
        self._cache_rows = cache_rows(per_jet, self.config.threads or os.cpu_count() or 1)

    @property
    def block_threads(self) -> int:
        """Python threads for passes run block by block (:mod:`hepaudit.model.blocks`): one per
        ``model.threads`` (0: per core) on the CPU; one on an accelerator, which takes each call
        whole."""
        from hepaudit.model.blocks import block_threads

        return block_threads(self.config.threads) if self.providers == [CPU] else 1

    def factored(self, input_name: str) -> FactoredPasses | None:
        """The occluded passes' head and tail sessions around the dense layer that reads input
        ``input_name`` (:mod:`hepaudit.model.first_layer`); None where the graph has no such layer,
        on an accelerator, for a fixed batch, or when ``model.factor_first_layer`` is false."""
        if not self.factor_first_layer or self.providers != [CPU] or self.fixed_batch:
            return None
        if input_name not in self._factored:
            from hepaudit.model.first_layer import FactoredPasses, split_first_layer

            split = split_first_layer(self.proto, input_name)
            passes = None
            if split is not None:
                outputs = list(dict.fromkeys(self._base_outputs))
                try:
                    head = self._make_session([], keep=False, proto=split.head)
                    tail = self._make_session(outputs, keep=False, proto=split.tail)
                except ModelError:  # a cut onnxruntime does not take: the whole graph, as before
                    head = tail = None
                if head is not None:
                    passes = FactoredPasses(split, head, tail, outputs, self._score_and_logit, self.count_run)
            self._factored[input_name] = passes
        return self._factored[input_name]

    def one_thread(self) -> Tagger:
        """A twin of this tagger (same graph, score and row sizes; score and logit only) whose
        onnxruntime runs each call on the calling thread alone, for passes run block by block
        on several Python threads (:mod:`hepaudit.model.blocks`): for the many small calls of
        occlusion, that keeps every core busy without waking a thread pool at each layer of
        each call. Its onnxruntime time counts in this tagger's ``inference_s``. On an
        accelerator (``model.providers``), the tagger itself."""
        if self.providers != [CPU]:
            return self
        if self._one_thread is None:
            twin = Tagger(replace(self.config, threads=1), proto=self.proto, info=self.info)
            twin.memory_rows, twin._cache_rows = self.memory_rows, self._cache_rows
            twin._meter = self
            self._one_thread = twin
        return self._one_thread

    def count_run(self, t0: float) -> None:
        """Add one onnxruntime call that began at ``t0`` (calls from several threads add up)."""
        meter = self._meter
        with meter._counting:
            meter.inference_s += time.perf_counter() - t0
            meter.n_runs += 1

    # -- running ------------------------------------------------------------------------------
    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Every graph input present with a compatible per-jet shape; clear errors otherwise."""
        for info in self.info.inputs:
            if info.name not in inputs:
                raise ModelError(f"{self.path}: ONNX input {info.name!r} is not configured "
                                 f"(configured: {', '.join(inputs) or 'none'}); add an [[inputs]] table for it")
            got = inputs[info.name].shape
            want = info.shape
            if len(got) != len(want) or any(isinstance(w, int) and w != g for w, g in zip(want[1:], got[1:])):
                shown = ["N" if not isinstance(w, int) else w for w in want]
                raise ConfigError(f"{self.path}: ONNX input {info.name!r} expects shape {tuple(shown)}, "
                                 f"the config builds {('N',) + tuple(got[1:])}")
        extra = set(inputs) - {i.name for i in self.info.inputs}
        if extra:
            raise ConfigError(f"inputs: the model has no input {sorted(extra)[0]!r} "
                              f"(model inputs: {', '.join(i.name for i in self.info.inputs)})")

    def run(self, inputs: Mapping[str, np.ndarray], extra: bool = True, scratch: bool = False) -> ModelOutputs:
        """Score a chunk of jets of any length, batch by batch.

        ``scratch=True``: the exposed tensors are written into arrays the tagger keeps and
        reuses, so they are valid only until the next ``scratch`` run. The executor's one
        scoring run per chunk uses it: fresh arrays for TopoDNN's 420 hidden floats a jet
        cost more in page faults than onnxruntime takes to fill them. The score and logit
        are always fresh arrays.
        """
        n = len(next(iter(inputs.values())))
        if n:
            self.learn_footprint(inputs)
        batch = self.fixed_batch or min(self.config.batch_size, self.memory_rows or self.config.batch_size)
        # without extras, ask onnxruntime for the score (and logit) only: exposed hidden tensors
        # (NAP's (N, 64, 100, 16) EdgeConv activations in ParticleNet) are then neither computed
        # for their own sake nor kept, which matters for the many occluded and SHAP passes
        names = self._output_names if extra else [k for k in self._output_names if k in self._base_outputs]
        if n == 0:
            empty = np.zeros(0)
            return ModelOutputs(empty, empty, {k: np.zeros((0,)) for k in self._extra})
        if extra and self._extra:
            self._learn_axes(inputs)
            names = [k for k in names if k in self._base_outputs or self.jet_axes.get(k) is not None]
        rows_only = all(k in self._base_outputs or (self._axis(k).is_rows and k not in self._reducers) for k in names)
        key = (tuple(names), tuple((k, v.shape[1:], v.dtype.str) for k, v in inputs.items()))
        scratch = scratch and extra and bool(self._extra)
        layout = self._layouts.get(key) if n > batch or scratch else None
        joined: dict[str, np.ndarray] = self._output_arrays(key, layout, n, scratch) if layout else {}
        pieces: list[dict[str, np.ndarray]] = []  # only for outputs that are not one row per jet
        binding: ort.IOBinding | None = None
        for start in range(0, n, batch):
            feed = {k: v[start:start + batch] for k, v in inputs.items()}
            m = len(next(iter(feed.values())))
            padded = bool(self.fixed_batch and m < self.fixed_batch)
            feed = self.padded_feed(feed)  # the last batch of a fixed-batch model is padded
            values: list[np.ndarray] | None = None
            t0 = time.perf_counter()
            if joined and not padded and rows_only:
                # later batches of a chunk: onnxruntime writes straight into their rows of the
                # chunk's output arrays, with no per-batch arrays to concatenate afterwards (NAP's
                # hidden layers are 420 floats a jet in TopoDNN: the copy cost half a forward pass)
                if binding is None:
                    binding = self._session.io_binding()
                for k, v in feed.items():
                    binding.bind_cpu_input(k, np.ascontiguousarray(v))
                for k in names:
                    out = joined[k]
                    binding.bind_output(k, "cpu", 0, out.dtype.type, [m, *out.shape[1:]],
                                        out[start:start + m].ctypes.data)
                try:
                    self._session.run_with_iobinding(binding)
                except Exception as exc:
                    raise ModelError(f"{self.path}: an output's shape per jet changed between batches "
                                     f"({str(exc).splitlines()[0][:200]})") from None
            else:
                try:
                    values = self._session.run(names, feed)
                except Exception as exc:  # onnxruntime's Fail, InvalidArgument, ...: name the model and the node
                    first = (str(exc).splitlines() or [""])[0]
                    raise ModelError(f"{self.path}: onnxruntime failed to run the model on {m} jets: "
                                     f"{first[:300]}") from None
            self.count_run(t0)
            if values is None:
                continue
            values = [self._per_jet(k, val, m) for k, val in zip(names, values)]
            if self._reducers:
                batch_inputs = {k: v[start:start + m] for k, v in inputs.items()}
                values = [self._reducers[k](k, val, batch_inputs) if k in self._reducers else val
                          for k, val in zip(names, values)]
            if not joined and not pieces:
                per_jet = all(val.ndim > 0 and val.shape[0] == m for val in values)
                if per_jet:
                    self._layouts[key] = {k: (val.shape[1:], val.dtype) for k, val in zip(names, values)}
                if m == n:  # a single batch: onnxruntime's own arrays are the result, no copy
                    joined = {k: val[:m] for k, val in zip(names, values)}
                    break
                if per_jet:
                    joined = {k: np.empty((n, *val.shape[1:]), val.dtype) for k, val in zip(names, values)}
            if joined:
                for k, val in zip(names, values):
                    joined[k][start:start + m] = val[:m]
            else:  # some output is not one row per jet: join the pieces as they come
                pieces.append({name: val[:m] for name, val in zip(names, values)})
        if pieces:
            joined = {k: np.concatenate([p[k] for p in pieces]) for k in names}
        score, logit = self._score_and_logit(joined)
        extras = {k: joined[k] for k in self._extra if k in joined} if extra else {}
        return ModelOutputs(score, logit, extras)

    # -- jet axes -----------------------------------------------------------------------------
    def _axis(self, name: str) -> JetAxis:
        axis = self.jet_axes.get(name)
        return ROWS if axis is None else axis

    def _per_jet(self, name: str, value: np.ndarray, m: int) -> np.ndarray:
        """One batch's output as (m, ...) per jet: rows of a padded fixed batch cut to the jets,
        other layouts viewed along their jet axis."""
        if name in self._base_outputs or self._axis(name).is_rows:
            return value[:m] if self.fixed_batch else value
        return self._axis(name).view(value, m)

    def padded_feed(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The feed padded to a fixed batch (repeating the last jet), else as it is."""
        m = len(next(iter(feed.values())))
        if not self.fixed_batch or m >= self.fixed_batch:
            return dict(feed)
        pad = self.fixed_batch - m
        return {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) for k, v in feed.items()}

    def _learn_axes(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Learn the jet axis of every exposed tensor not yet known, from one jet and two."""
        todo = [k for k in self._extra if k not in self.jet_axes and k not in self._base_outputs]
        if not todo:
            return
        n = len(next(iter(inputs.values())))
        one = list(self.raw_values({k: v[:1] for k, v in inputs.items()}, todo).values())
        if self.fixed_batch:  # the batch never changes: rows of the fixed batch are the jets
            axes = [ROWS if v.ndim and v.shape[0] == self.fixed_batch else None for v in one]
        else:
            pair = list(self.raw_values({k: v[[0, min(1, n - 1)]] for k, v in inputs.items()}, todo).values())
            axes = [learn_jet_axis(a, b) for a, b in zip(one, pair)]
        for name, value, axis in zip(todo, one, axes):
            self.jet_axes[name] = axis
            if axis is None:
                self.no_jet_axis[name] = (f"tensor {name!r} (shape {tuple(value.shape)} for one jet) has no axis "
                                          "that holds each jet's entries one jet after the other")

    def raw_values(self, inputs: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
        """``names`` for these jets in one onnxruntime call, as the graph holds them (no per-jet
        view, a fixed batch padded and not cut): what the backward pass reads. Keep the block
        of jets small: nothing here bounds the memory."""
        key = tuple(names)
        session = self._raw_sessions.get(key)
        if session is None:
            session = self._raw_sessions[key] = self._make_session(list(key), keep=False)
        t0 = time.perf_counter()
        try:
            values = session.run(list(key), self.padded_feed(inputs))
        except Exception as exc:
            first = (str(exc).splitlines() or [""])[0]
            raise ModelError(f"{self.path}: onnxruntime failed to run the model: {first[:300]}") from None
        finally:
            self.count_run(t0)
        return dict(zip(key, values))

    def _output_arrays(self, key: tuple[object, ...], layout: dict[str, tuple[tuple[int, ...], np.dtype]],
                       n: int, scratch: bool) -> dict[str, np.ndarray]:
        """Arrays for a run's outputs: fresh ones, or for ``scratch`` the kept ones for exposed tensors."""
        arrays = {k: np.empty((n, *shape), dtype) for k, (shape, dtype) in layout.items()
                  if not scratch or k in self._base_outputs}
        if scratch:
            kept = self._scratch.setdefault(key, {})
            for k, (shape, dtype) in layout.items():
                if k in arrays:
                    continue
                if k not in kept or len(kept[k]) < n:
                    kept[k] = np.empty((n, *shape), dtype)
                arrays[k] = kept[k][:n]
        return arrays

    def score_from(self, out: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Score and logit per jet from the score output (and the head's logit tensor), as
        returned by a session over part of the graph that ends at the same tensors."""
        return self._score_and_logit(out)

    def signal_score(self, raw: np.ndarray) -> np.ndarray:
        """The signal score per jet (float64) from the values of the score output alone."""
        spec = self.score_spec
        raw2 = raw.astype(np.float64).reshape(len(raw), -1)
        if spec.is_class_sum:
            s = raw2[:, list(spec.signal)].sum(axis=1)
            b = raw2[:, list(spec.background)].sum(axis=1)
            return s / (s + b)
        return raw2[:, spec.column or 0]

    def _score_and_logit(self, out: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        spec = self.score_spec
        raw = out[spec.output]
        score = self.signal_score(raw)
        z = out[spec.head.logit].astype(np.float64).reshape(len(raw), -1) if spec.head else None
        if spec.is_class_sum:
            if z is not None:
                return score, _logsumexp(z, spec.signal) - _logsumexp(z, spec.background)
            return score, _prob_logit(score)
        col = spec.column or 0
        if z is not None and spec.head is not None and spec.head.op == "Sigmoid":
            return score, z[:, col] if z.shape[1] > col else z[:, 0]
        if z is not None:  # softmax column c: z_c - logsumexp(others)
            others = [i for i in range(z.shape[1]) if i != col]
            return score, z[:, col] - _logsumexp(z, others)
        return score, _prob_logit(score)


def _prob_logit(p: np.ndarray) -> np.ndarray:
    eps = 1e-15
    q = np.clip(p, eps, 1 - eps)
    return np.log(q) - np.log1p(-q)
