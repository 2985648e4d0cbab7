"""SHAP on TopoDNN: hepaudit's Kernel SHAP against shap.KernelExplainer, time and accuracy.

Target (issue 5): 100 jets, 90 features, mean background; at hepaudit's default budget
(samples = "auto") it is >= 20x faster than ``shap.KernelExplainer(...).shap_values(X,
nsamples="auto", l1_reg=False)`` with an equal or smaller error against a converged
reference. The reference is hepaudit's antithetic permutation sampler with many
permutations (an estimator independent of the Kernel SHAP regression under test), and its
own standard error is printed so one can see it is well below the errors compared.

Model: examples/models/topodnn.onnx when present, else a TopoDNN-shaped 90-300-102-12-6-1
ReLU MLP with random weights and a Sigmoid head. Jets: TopoDNN inputs built by hepaudit's
``topodnn`` recipe from examples/data/top_qcd_test.root when present, else random normal
inputs. The script says which it used. Needs ``pip install shap`` (benchmark only).

Timing: --rounds (3) interleaved rounds of both; the medians are compared. shap's error is the
mean over the rounds' seeds.

Error vs budget (issue 19): ``--budget-table 10,50,200,...`` prints, per budget of model
evaluations per jet, the RMS error against the reference of hepaudit's Kernel SHAP and of
``shap.KernelExplainer``, each with the Lasso off and with ``l1_reg="aic"``, as the mean over
``--seeds`` seeds (shap's AIC needs more augmented rows than players: "n/a" below that).

    python benchmarks/bench_shap.py [--jets 100] [--rounds 3] [--reference-permutations 2000] [--budgets 1716,2228]
    python benchmarks/bench_shap.py --budget-table 10,50,200,500,1000,2000 [--seeds 3] [--jets 40]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EXAMPLE_MODEL, EXAMPLE_SAMPLE, machine, random_topodnn, topodnn_config  # noqa: E402


def load_inputs(args: argparse.Namespace, workdir: Path) -> tuple[object, np.ndarray, np.ndarray, str]:
    """The explainer (with a real AuditContext), all jets' inputs, their labels, and what was used."""
    from hepaudit.config import load_config
    from hepaudit.data.builders import InputBuilder
    from hepaudit.data.reading import Sample
    from hepaudit.explainers.base import AuditContext
    from hepaudit.explainers.shap.explainer import Shap, ShapOptions
    from hepaudit.model.session import Tagger
    from hepaudit.plugins import PluginHost

    model = EXAMPLE_MODEL if EXAMPLE_MODEL.exists() else random_topodnn(workdir / "topodnn_random.onnx")
    note = "" if EXAMPLE_MODEL.exists() else (" (TopoDNN-shaped 90-300-102-12-6-1, random weights; "
                                              "topodnn.onnx absent)")
    what = [f"model: {model.name}{note}"]
    cfg_path = workdir / "bench_shap.toml"
    data = EXAMPLE_SAMPLE
    cfg_path.write_text(topodnn_config(model, [data]))
    cfg = load_config(cfg_path)
    tagger = Tagger(cfg.model)
    builder = InputBuilder(cfg.inputs, PluginHost().recipes().recipes, tagger.info.inputs)
    if EXAMPLE_SAMPLE.exists():
        sample = Sample(cfg.data)
        sample.check(["is_signal"], builder.jagged_branches)
        xs, labels = [], []
        for raw in sample.chunks(builder.branches + ["is_signal"]):
            xs.append(builder.build(raw.arrays)["x"])
            labels.append(np.asarray(raw.arrays["is_signal"]))
        x, y = np.concatenate(xs), np.concatenate(labels)
        what.append(f"data: {data.name}, {len(x)} jets, TopoDNN inputs from the topodnn recipe")
    else:
        rng = np.random.default_rng(1)
        x = rng.normal(size=(5000, 90)).astype(np.float32)
        y = (np.arange(len(x)) % 2).astype(np.int8)
        what.append("data: random normal inputs (top_qcd_test.root absent)")
    context = AuditContext(tagger=tagger, builder=builder, features=builder.features, groups=builder.groups(),
                           input_mean={"x": x.mean(axis=0).astype(np.float32)}, seed=args.seed)
    explainer = Shap(ShapOptions(), context)
    return explainer, x, y, "; ".join(what)


def pick_jets(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    half = n // 2
    idx = np.concatenate([rng.choice(np.flatnonzero(y == 1), half, replace=False),
                          rng.choice(np.flatnonzero(y == 0), n - half, replace=False)])
    return np.sort(idx)


def rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jets", type=int, default=100)
    parser.add_argument("--reference-permutations", type=int, default=2000)
    parser.add_argument("--budgets", default="", help="extra hepaudit budgets to compare (comma separated)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (medians are compared)")
    parser.add_argument("--budget-table", default="", help="budgets for the error-vs-budget table (comma separated)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per budget in the error-vs-budget table")
    args = parser.parse_args()
    import shap

    from hepaudit.explainers.shap.kernel import default_budget

    workdir = Path(tempfile.mkdtemp(prefix="hepaudit-bench-shap-"))
    explainer, x_all, y_all, what = load_inputs(args, workdir)
    tagger = explainer.context.tagger
    print(f"machine: {machine()}")
    print(what)
    idx = pick_jets(x_all, y_all, args.jets, args.seed)
    x = x_all[idx]
    mean = x_all.mean(axis=0, keepdims=True).astype(np.float32)
    f_x = tagger.run({"x": x}, extra=False).score
    m = x.shape[1]
    print(f"jets explained: {len(x)} ({int(y_all[idx].sum())} signal), players: {m} features, "
          "background: mean")

    if args.budget_table:
        budget_table(args, explainer, x, f_x, mean, [int(b) for b in args.budget_table.split(",")])
        return

    # warm the session up (thread pools, memory arenas) once, as the audit's chunk loop does
    # before finish(); the peer below uses the same warm session
    tagger.run({"x": np.repeat(x, 2000, axis=0)}, extra=False)

    # the peer: shap.KernelExplainer on the same onnxruntime session, one background row (the mean)
    session = tagger._session
    output = tagger.score_spec.output

    def model_fn(batch: np.ndarray) -> np.ndarray:
        return session.run([output], {"x": batch.astype(np.float32)})[0][:, 0].astype(np.float64)

    # interleaved rounds (the machine's load hits both alike); the median time of each side.
    # hepaudit runs its default budget through the explainer's own compute path, with the
    # explainer's seed; shap draws its coalitions from numpy's global generator, seeded per round
    ours_times, peer_times, peer_errors_phi = [], [], []
    ours = None
    for r in range(args.rounds):
        t0 = time.perf_counter()
        ours = explainer.compute({"x": x}, f_x, {"x": mean}, np.ones(1))
        ours_times.append(time.perf_counter() - t0)
        np.random.seed(args.seed + r)
        peer = shap.KernelExplainer(model_fn, mean.astype(np.float64))
        t0 = time.perf_counter()
        phi = np.asarray(peer.shap_values(x.astype(np.float64), nsamples="auto", l1_reg=False, silent=True))
        peer_times.append(time.perf_counter() - t0)
        peer_errors_phi.append(phi.reshape(len(x), m))
    assert ours is not None
    ours_s, peer_s = float(np.median(ours_times)), float(np.median(peer_times))
    peer_phi = peer_errors_phi[0]

    # the converged reference: antithetic permutations (independent of the regression under test)
    explainer_ref = type(explainer)(type(explainer.options)(method="permutation", max_exact=0,
                                                            samples=args.reference_permutations * (m - 1),
                                                            seed=args.seed + 1000), explainer.context)
    t0 = time.perf_counter()
    ref = explainer_ref.compute({"x": x}, f_x, {"x": mean}, np.ones(1))
    ref_s = time.perf_counter() - t0
    reference = ref["phi"]
    ref_se = float(np.sqrt(np.mean(ref["error"] ** 2)))

    ours_err = rms(ours["phi"], reference)
    peer_errs = [rms(p, reference) for p in peer_errors_phi]
    peer_err = float(np.mean(peer_errs))  # shap's error varies with its seed: the mean over rounds
    additivity_peer = float(np.max(np.abs(peer.expected_value + peer_phi.sum(axis=1) - f_x)))
    additivity_ours = float(np.max(np.abs(ours["v_empty"] + ours["phi"].sum(axis=1) - f_x)))
    scale = float(np.sqrt(np.mean(reference ** 2)))
    print(f"reference: {args.reference_permutations} antithetic permutations, {ref_s:.1f} s, "
          f"its RMS standard error {ref_se:.2e} (RMS |phi| = {scale:.2e})")
    print(f"hepaudit Kernel SHAP, samples=auto ({ours['samples']} coalitions/jet, default 2M+1536 = "
          f"{default_budget(m)}): {ours_s:7.2f} s   RMS error {ours_err:.3e}   "
          f"additivity {additivity_ours:.1e}"
          f"   reported error estimate (RMS) {np.sqrt(np.mean(ours['error'] ** 2)):.3e}")
    print(f"shap.KernelExplainer nsamples='auto', l1_reg=False:            {peer_s:7.2f} s   RMS error "
          f"{peer_err:.3e} (mean of {len(peer_errs)} seeds: {', '.join(f'{e:.2e}' for e in peer_errs)})   "
          f"additivity {additivity_peer:.1e}")
    print(f"times over {args.rounds} interleaved rounds: hepaudit {', '.join(f'{t:.3f}' for t in ours_times)} s; "
          f"shap {', '.join(f'{t:.2f}' for t in peer_times)} s")
    print(f"RATIO time shap / hepaudit = {peer_s / ours_s:.1f}x  (target >= 20)")
    print(f"RATIO error hepaudit / shap = {ours_err / peer_err:.2f}  (target <= 1)")
    inference = tagger.inference_s
    print(f"(onnxruntime time inside all hepaudit runs so far: {inference:.1f} s)")

    budgets = [int(b) for b in args.budgets.split(",") if b]
    for budget in budgets:
        for method in ("kernel", "permutation"):
            opts = type(explainer.options)(method=method, max_exact=0, samples=budget, seed=args.seed)
            e = type(explainer)(opts, explainer.context)
            t0 = time.perf_counter()
            out = e.compute({"x": x}, f_x, {"x": mean}, np.ones(1))
            seconds = time.perf_counter() - t0
            print(f"  budget {budget:6d} {method:11s}: {out['rows'] / len(x):8.0f} model rows/jet  "
                  f"{seconds:6.2f} s  RMS error {rms(out['phi'], reference):.3e}")


def budget_table(args: argparse.Namespace, explainer, x: np.ndarray, f_x: np.ndarray, mean: np.ndarray,
                 budgets: list[int]) -> None:
    """RMS error against the converged reference, per budget: hepaudit and shap, Lasso off and AIC."""
    import warnings

    import shap

    m = x.shape[1]
    tagger = explainer.context.tagger
    session, output = tagger._session, tagger.score_spec.output

    def model_fn(batch: np.ndarray) -> np.ndarray:
        return session.run([output], {"x": batch.astype(np.float32)})[0][:, 0].astype(np.float64)

    Options = type(explainer.options)
    ref = type(explainer)(Options(method="permutation", max_exact=0, samples=args.reference_permutations * (m - 1),
                                  seed=args.seed + 1000), explainer.context)
    t0 = time.perf_counter()
    out = ref.compute({"x": x}, f_x, {"x": mean}, np.ones(1))
    reference = out["phi"]
    print(f"reference: {args.reference_permutations} antithetic permutations ({time.perf_counter() - t0:.0f} s), "
          f"RMS standard error {np.sqrt(np.mean(out['error'] ** 2)):.2e}, "
          f"RMS |phi| {np.sqrt(np.mean(reference ** 2)):.2e}")
    print(f"RMS error against it, mean over {args.seeds} seeds; {len(x)} jets, {m} players")
    print(f"{'budget':>7} {'hepaudit':>10} {'hep. aic':>10} {'shap':>10} {'shap aic':>10} "
          f"{'ratio':>6} {'ratio aic':>9}")
    for budget in budgets:
        cells: dict[str, list[float]] = {"ours": [], "ours_aic": [], "shap": [], "shap_aic": []}
        for seed in range(args.seeds):
            for key, l1 in (("ours", False), ("ours_aic", "aic")):
                e = type(explainer)(Options(max_exact=0, samples=budget, seed=args.seed + seed, l1_reg=l1),
                                    explainer.context)
                try:
                    phi = e.compute({"x": x}, f_x, {"x": mean}, np.ones(1))["phi"]
                    cells[key].append(rms(phi, reference))
                except RuntimeError:
                    cells[key].append(float("nan"))
            for key, l1 in (("shap", False), ("shap_aic", "aic")):
                np.random.seed(args.seed + seed)
                peer = shap.KernelExplainer(model_fn, mean.astype(np.float64))
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        phi = np.asarray(peer.shap_values(x.astype(np.float64), nsamples=budget, l1_reg=l1,
                                                          silent=True)).reshape(len(x), m)
                    cells[key].append(rms(phi, reference))
                except ValueError:  # sklearn: too few rows to estimate the noise variance
                    cells[key].append(float("nan"))
        mean_of = {k: float(np.mean(v)) for k, v in cells.items()}

        def show(v: float) -> str:
            return f"{v:10.3e}" if np.isfinite(v) else f"{'n/a':>10}"

        ratio = mean_of["ours"] / mean_of["shap"]
        ratio_aic = mean_of["ours_aic"] / mean_of["shap_aic"]
        print(f"{budget:7d} {show(mean_of['ours'])} {show(mean_of['ours_aic'])} {show(mean_of['shap'])} "
              f"{show(mean_of['shap_aic'])} {ratio:6.2f} {ratio_aic if np.isfinite(ratio_aic) else float('nan'):9.2f}")
    print("ratio = hepaudit / shap at the same budget and Lasso setting (target <= 1)")


if __name__ == "__main__":
    main()
