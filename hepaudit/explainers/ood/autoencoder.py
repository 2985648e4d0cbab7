"""``ood_ae``: is this jet's input unlike the reference? Autoencoder reconstruction error.

Definition (docs/methods.md, "OOD: autoencoder"): x is the jet's model input — every
non-mask feature input flattened per jet in model order (the report's feature order), or
one named input (option ``input``). r(x) is an autoencoder's reconstruction: the user's
ONNX model (option ``autoencoder``, a path relative to the config file; it takes (N, D)
and returns (N, D)) or, without one, a PCA (or optional scikit-learn MLP) fitted on the fit
half of the reference and saved as ``ood_autoencoder.onnx`` next to the report. With
s_k the reference standard deviation of input k (1 for inputs constant in the reference),
the per-feature error is e_k = ((x_k − r_k) / s_k)² (``standardise = false``: (x_k − r_k)²)
and the jet's score is mean_k e_k.

The reference (``[reference]``, the option ``reference``, or else the audited data itself)
is split by a seeded hash of the entry number: the fit half (at most
``max_reference_jets`` jets, a uniform subsample) fits the autoencoder and gives the
threshold = the ``quantile`` of its scores; the held-out half gives the reference
flagged fraction (expected 1 − quantile). A jet is flagged when its score > threshold.
With a real reference the result has the AUROC of the score for held-out reference (0)
vs audited (1) jets, and ``drivers``: the inputs ranked by the excess of their audited
mean error over their held-out reference mean error (kept out of ``feature_importance``,
which compares attributions of the tagger; this ranks the inputs' unusualness).

Per jet (per_jet.root): ``ood_ae_score``, ``ood_ae_flag``, and ``ood_flag``, which every
OOD explainer ORs its own flag into.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hepaudit.errors import ConfigError
from hepaudit.explainers.base import AuditContext, Chunk, Explainer
from hepaudit.explainers.ood import figures
from hepaudit.explainers.ood.common import (
    Reservoir,
    quantile_threshold,
    real_reference,
    resolve_path,
)
from hepaudit.explainers.ood.fit import FittedAutoencoder, Standardisation, fit_mlp, fit_pca
from hepaudit.explainers.ood.scored import Kinematics, add_held_out, flag_jets, reference_split, threshold_fields
from hepaudit.lazy import lazy_module
from hepaudit.model.blocks import block_starts, for_blocks, one_thread_session, shared_rows
from hepaudit.model.session import CACHED_ROWS
from hepaudit.results import ExplainerResult, Figure

if TYPE_CHECKING:
    import onnxruntime as ort
else:  # loaded on first use (hepaudit.lazy): registering plugins imports none of them
    ort = lazy_module("onnxruntime")

SAVED_NAME = "ood_autoencoder.onnx"
WHAT = "autoencoder reconstruction error"  # the score, as the figure names it


@dataclass(frozen=True)
class OodAeOptions:
    autoencoder: str | None = None  # ONNX path relative to the config file; fitted when absent
    input: str | None = None  # one model input only (default: every non-mask input)
    quantile: float = 0.95  # threshold: this quantile of the fit-half reference scores
    method: Literal["pca", "mlp"] = "pca"  # the fallback when no autoencoder is given
    variance: float = 0.99  # PCA: fraction of standardised variance the kept components explain
    hidden: int = 16  # MLP: bottleneck width
    max_iter: int = 200  # MLP: scikit-learn iterations (the time bound)
    max_reference_jets: int = 50_000  # per reference half (fit / held-out)
    standardise: bool = True  # errors in units of the reference's standard deviation
    reference: dict | None = None  # a reference sample table for this explainer only (the keys of [reference])

    def __post_init__(self) -> None:
        if not 0.0 < self.quantile < 1.0:
            raise ValueError("quantile must be between 0 and 1")
        if not 0.0 < self.variance <= 1.0:
            raise ValueError("variance must be in (0, 1]")
        if self.max_reference_jets < 10 or self.hidden < 1 or self.max_iter < 1:
            raise ValueError("max_reference_jets must be >= 10, hidden and max_iter >= 1")


@dataclass
class AeState:
    fit: Reservoir
    held: Reservoir
    n_reference: int = 0
    scores: list[np.ndarray] = field(default_factory=list)
    kin: Kinematics = field(default_factory=Kinematics)
    error_sum: np.ndarray | None = None  # Σ over audited jets of e_k, per input
    n: int = 0


class OodAutoencoder(Explainer[AeState]):
    name = "ood_ae"
    Options = OodAeOptions
    needs = frozenset({"reference", "arrays"})
    description = "Out-of-distribution inputs: autoencoder reconstruction error against a reference"

    def __init__(self, options: OodAeOptions, context: AuditContext) -> None:
        super().__init__(options, context)
        slots = context.builder.slots
        if options.input is not None:
            known = sorted({s.input for s in slots})
            if options.input not in known:
                raise ConfigError(
                    f"explainers.ood_ae.input: {options.input!r} is not a feature input "
                    f"(feature inputs: {', '.join(known)})"
                )
        self.features = [k for k, s in enumerate(slots) if options.input is None or s.input == options.input]
        self.names = [context.features[k] for k in self.features]
        by_input: dict[str, list[int]] = {}
        for k in self.features:
            by_input.setdefault(slots[k].input, []).append(slots[k].index)
        self.positions = by_input
        self.threads = context.tagger.block_threads
        self.path: str | None = None
        self.session: ort.InferenceSession | None = None
        if options.autoencoder is not None:
            self.path = resolve_path(context, options.autoencoder)
            if not Path(self.path).is_file():
                raise ConfigError(f"explainers.ood_ae.autoencoder: {self.path}: file not found")
            try:
                self.session = one_thread_session(self.path)
            except Exception as exc:
                raise ConfigError(
                    f"explainers.ood_ae.autoencoder: {self.path}: onnxruntime cannot load it "
                    f"({str(exc).splitlines()[0][:200]})"
                ) from None
            self._check_autoencoder(self.session)
        self.real_reference = real_reference(context, options)
        self.fitted: FittedAutoencoder | None = None
        self.saved: str | None = None

    def _check_autoencoder(self, session: ort.InferenceSession) -> None:
        d = len(self.features)
        shape = session.get_inputs()[0].shape
        width = shape[-1] if len(shape) == 2 else None
        if len(shape) != 2 or (isinstance(width, int) and width != d):
            raise ConfigError(
                f"explainers.ood_ae.autoencoder: {self.path}: its input "
                f"{session.get_inputs()[0].name!r} has shape {shape}; it must take the flattened "
                f"model inputs, (N, {d})"
            )

    # -- inputs and errors ---------------------------------------------------------------------
    def _matrix(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        n = len(next(iter(inputs.values())))
        parts = []
        for name, idx in self.positions.items():
            flat = inputs[name].reshape(n, -1)
            # the usual case (every position of the input is a feature, in order) needs no copy
            whole = len(idx) == flat.shape[1] and idx == list(range(flat.shape[1]))
            parts.append(flat if whole else flat[:, idx])
        x = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per jet the score (mean of e_k over inputs) and the sum over jets of each e_k,
        float64; e_k = the squared error, in standardised units unless standardise = false.

        Block by block, on ``self.threads`` threads: each block's errors are reduced while
        they are still in cache, and the (N, inputs) error matrix is never held. Each block's
        sums are added in block order, so they do not depend on the threads.
        """
        assert self.session is not None
        session = self.session
        name = session.get_inputs()[0].name
        inverse = (1.0 / self.standard.scale).astype(np.float32)
        # a block of errors stays in cache while it is reduced; at most the model's batch size
        rows = shared_rows(min(CACHED_ROWS, self.context.tagger.config.batch_size))
        scores = np.empty(len(x))
        sums = np.zeros((len(block_starts(len(x), rows)), x.shape[1]))
        per_input = np.full(x.shape[1], 1.0 / x.shape[1], np.float32)  # row sum -> mean
        scratch = threading.local()  # one error block per thread, reused

        def block(i: int, start: int, stop: int) -> None:
            xb = x[start:stop]
            rec = session.run(None, {name: xb})[0].reshape(len(xb), -1)
            if rec.shape[1] != x.shape[1]:
                raise ValueError(
                    f"the autoencoder returned {rec.shape[1]} values per jet for {x.shape[1]} inputs"
                )
            buffer = getattr(scratch, "block", None)
            if buffer is None:
                buffer = scratch.block = np.empty((min(rows, len(x)), x.shape[1]), np.float32)
            diff = np.subtract(xb, rec, out=buffer[: len(xb)], dtype=np.float32)
            if self.options.standardise:
                diff *= inverse
            np.square(diff, out=diff)
            # the score: a float32 row sum by BLAS (a jet's own 90-odd terms, so it does not
            # depend on how jets are blocked); each input's sum over the block's jets in
            # float32 by numpy (row after row, whatever the threads; half the time of a
            # float64 sum), then float64 across blocks and chunks
            scores[start:stop] = diff @ per_input
            sums[i] = diff.sum(axis=0)

        for_blocks(len(x), rows, self.threads, block)
        return scores, sums.sum(axis=0) if len(sums) else np.zeros(x.shape[1])

    # -- reference pass ------------------------------------------------------------------------
    def start(self) -> AeState:
        cap = self.options.max_reference_jets
        return AeState(Reservoir(cap), Reservoir(cap))

    def update_reference(self, state: AeState, chunk: Chunk) -> AeState:
        keys, fit, keep = reference_split(chunk, self.context.seed, state.fit, state.held)
        state.n_reference += len(chunk)
        x = self._matrix(chunk.inputs)
        state.fit.add(keys[fit], x=x[fit])
        add_held_out(state.held, chunk, keys, keep, x=x[keep])
        return state

    def prepare(self, state: AeState) -> None:
        """Fit (when needed), then threshold and reference errors: once, before the first audited chunk."""
        fit_x = state.fit.sorted_columns().get("x")
        if fit_x is None or len(fit_x) < 4:
            raise ValueError(
                "the reference sample has fewer than 4 jets in its fit half; give a larger reference"
            )
        self.standard = Standardisation.fit(fit_x)
        calibration = fit_x
        if self.session is None:
            # The threshold must come from jets the autoencoder was not fitted on: in-sample
            # reconstruction errors are too small, and the held-out flagged fraction would
            # exceed 1 - quantile. A second hash bit splits the fit half into the two.
            second = ((np.sort(state.fit.keys) >> np.uint64(1)) & np.uint64(1)).astype(bool)
            train, calibration = fit_x[~second], fit_x[second]
            if len(train) < 2 or len(calibration) < 2:
                raise ValueError(
                    "the reference sample is too small to fit an autoencoder and set a threshold"
                )
            opts = self.options
            self.fitted = (
                fit_pca(train, opts.variance, self.standard)
                if opts.method == "pca"
                else fit_mlp(train, opts.hidden, self.context.seed, opts.max_iter, self.standard)
            )
            data = self.fitted.model.SerializeToString()
            self.session = one_thread_session(data)
            if self.context.output_dir is not None:
                folder = Path(self.context.write_dir or self.context.output_dir)
                target = folder / SAVED_NAME
                tmp = target.with_name(f".{SAVED_NAME}.tmp-{os.getpid()}")
                tmp.write_bytes(data)
                os.replace(tmp, target)
                self.saved = str(Path(self.context.output_dir) / SAVED_NAME)  # where it is once published
        self.threshold = quantile_threshold(self._scores(calibration)[0], self.options.quantile)
        self.n_threshold = len(calibration)
        held = state.held.sorted_columns()
        if "x" in held and len(held["x"]):
            self.reference_scores, sums = self._scores(held["x"])
            self.reference_errors = sums / len(held["x"])
        else:
            self.reference_scores = np.zeros(0)
            self.reference_errors = np.full(len(self.features), np.nan)
        self.reference_kin: dict[str, np.ndarray] = {k: held[k] for k in ("pt", "mass") if k in held}

    # -- audited pass ----------------------------------------------------------------------------
    def update(self, state: AeState, chunk: Chunk) -> AeState:
        score, sums = self._scores(self._matrix(chunk.inputs))
        score32 = score.astype(np.float32)  # one array for per_jet.root and the state: neither writes to it
        chunk.per_jet["ood_ae_score"] = score32
        flag_jets(chunk, self.name, score, self.threshold)
        state.scores.append(score32)
        state.kin.add(chunk)
        state.error_sum = sums if state.error_sum is None else state.error_sum + sums
        state.n += len(chunk)
        return state

    def merge(self, a: AeState, b: AeState) -> AeState:
        error_sum = (
            a.error_sum
            if b.error_sum is None
            else (b.error_sum if a.error_sum is None else a.error_sum + b.error_sum)
        )
        return AeState(
            a.fit.merged(b.fit),
            a.held.merged(b.held),
            a.n_reference + b.n_reference,
            a.scores + b.scores,
            a.kin.merged(b.kin),
            error_sum,
            a.n + b.n,
        )

    def finish(self, state: AeState) -> ExplainerResult:
        scores = np.concatenate(state.scores) if state.scores else np.zeros(0, np.float32)
        q = self.options.quantile
        audited_errors = (
            state.error_sum / state.n
            if state.n and state.error_sum is not None
            else np.full(len(self.features), np.nan)
        )
        fields: dict[str, Any] = {
            "definition": "score = mean over inputs of ((x - r(x)) / s)^2, s = reference std"
            if self.options.standardise
            else "score = mean over inputs of (x - r(x))^2",
            "autoencoder": self.path if self.path else "fitted on the reference",
            "fitted": self.fitted.description if self.fitted else None,
            "saved_autoencoder": self.saved,
            "inputs": len(self.features),
            "threshold": self.threshold,
            "threshold_quantile": q,
            "expected_reference_flagged_fraction": 1 - q,
            "reference_jets": state.n_reference,
            "reference_fit_jets": self.fitted.description["fitted_jets"] if self.fitted else 0,
            "reference_threshold_jets": self.n_threshold,
            "reference_held_out_jets": int(len(self.reference_scores)),
            "audited_jets": int(len(scores)),
            "mean_score": float(scores.mean()) if len(scores) else None,
            "reference_mean_score": float(self.reference_scores.mean())
            if len(self.reference_scores)
            else None,
        }
        kin_audited = state.kin.with_scores(scores)
        kin_reference: dict[str, np.ndarray] = {"score": self.reference_scores, **self.reference_kin}
        per_feature: list[dict[str, Any]] = [
            {"feature": n, "audited_error": float(a), "reference_error": float(r), "excess": float(a - r)}
            for n, a, r in zip(self.names, audited_errors, self.reference_errors)
        ]
        shared, warnings = threshold_fields(
            kin_audited, kin_reference, self.threshold, self.real_reference,
            "no reference sample: the audited data is its own reference, so only per-jet scores and "
            "their distribution are reported (flagged fractions and AUROC need a [reference] sample); "
            "ood_ae_flag marks the audited jets above the data's own quantile",
        )
        fields.update(shared)
        if self.real_reference:
            drivers = sorted(per_feature, key=lambda d: -d["excess"] if np.isfinite(d["excess"]) else np.inf)
            fields["drivers"] = drivers
            fraction, ref_fraction = fields["flagged_fraction"], fields["reference_flagged_fraction"]
            auroc = fields["auroc"]
            summary = (
                f"{fraction:.1%} of audited jets are above the reference's {q:.0%} quantile "
                f"(held-out reference: {ref_fraction:.1%}, expected {1 - q:.0%}); AUROC reference vs "
                f"audited {auroc:.3f}. Most unusual input: {drivers[0]['feature']}."
                if fraction is not None and ref_fraction is not None and auroc is not None and drivers
                else ""
            )
        else:
            fields.update(drivers=None, per_feature_error=sorted(per_feature, key=lambda d: -d["audited_error"]))
            summary = (
                f"No reference: reconstruction-error scores of the audited jets (median "
                f"{float(np.median(scores)):.3g}); flags mark the data's own top {1 - q:.0%}."
                if len(scores)
                else ""
            )
        return self.result(fields=fields, summary=summary, warnings=warnings)

    def draw(self, result: ExplainerResult) -> list[Figure]:
        return figures.ood_figures(self.name, WHAT, result.fields)
