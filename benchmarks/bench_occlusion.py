"""ΔAUC + MAD on TopoDNN: total audit time against the pure onnxruntime forward passes.

The target (issue 3): over >= 200k jets, the audit's wall time <= 1.3 x the time
onnxruntime alone needs for the 1 + (number of features) forward passes ΔAUC and MAD
need together (they share them). Both are measured in this one run, on the same jets,
with the same batch size and threads. Peak RSS is measured in separate processes at two
sample sizes to show memory does not grow beyond O(jets) scalars.

    python benchmarks/bench_occlusion.py [--jets 200000] [--memory 100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EXAMPLE_MODEL, machine, peak_rss_mb, repeated_sample, topodnn_config  # noqa: E402


def write_config(folder: Path, files: list[Path], step: int, factored: bool = True) -> Path:
    """The dauc + mad audit; ``factored=False``: every occluded pass runs the whole graph."""
    path = folder / ("audit.toml" if factored else "audit_whole_graph.toml")
    text = topodnn_config(EXAMPLE_MODEL, files, step=step,
                          extra="[execution]\nprogress = false\n[explainers.dauc]\n[explainers.mad]")
    if not factored:
        text = text.replace("[model]\n", "[model]\nfactor_first_layer = false\n", 1)
        assert "factor_first_layer" in text
    path.write_text(text)
    return path


def pure_onnxruntime_seconds(config: Path) -> tuple[dict[str, float], int, float]:
    """Time only session.run for the 1 + K passes, inputs built beforehand (not timed).

    Returns those times, the number of passes, and the time of the same passes with the first
    Gemm factored out (what the audit runs by default, :func:`factored` below).

    Four ways, so the audit is held to the fastest: whole chunks in model.batch_size
    batches, one pass after the other, on the Tagger's session (idle threads asleep);
    blocks of CACHED_ROWS jets, every pass of a block before the next block, on the Tagger's
    session and on a default session (spinning threads); and the audit's own way, blocks of
    half as many rows on every core, each block's passes on a one-thread session.
    """
    from concurrent.futures import ThreadPoolExecutor

    import onnxruntime as ort

    from hepaudit.config import load_config
    from hepaudit.data.builders import InputBuilder
    from hepaudit.data.reading import Sample
    from hepaudit.model.blocks import block_threads, shared_rows
    from hepaudit.model.session import CACHED_ROWS, Tagger
    from hepaudit.plugins import PluginHost

    cfg = load_config(config)
    tagger = Tagger(cfg.model)
    builder = InputBuilder(cfg.inputs, PluginHost().recipes().recipes, tagger.info.inputs)
    sample = Sample(cfg.data)
    sample.check([], builder.jagged_branches)
    outputs = [tagger.score_spec.output]
    n_passes = 1 + len(builder.features)
    chunks = [builder.build(raw.arrays)["x"] for raw in sample.chunks(builder.branches)]
    mean = np.concatenate(chunks).mean(axis=0)

    def passes(session: ort.InferenceSession, rows: int, blocked: bool) -> float:
        total = 0.0
        for x in chunks:
            blocks = [x[s:s + rows] for s in range(0, len(x), rows)] if blocked else [x]
            for block in blocks:
                for k in range(-1, len(builder.features)):
                    xo = block.copy()
                    if k >= 0:
                        xo[:, k] = mean[k]
                    t0 = time.perf_counter()
                    for start in range(0, len(xo), rows):
                        session.run(outputs, {"x": xo[start:start + rows]})
                    total += time.perf_counter() - t0
        return total

    def parallel(session: ort.InferenceSession, rows: int, threads: int) -> float:
        def block(x: np.ndarray) -> None:
            for k in range(-1, len(builder.features)):
                if k >= 0:
                    kept = x[:, k].copy()
                    x[:, k] = mean[k]
                session.run(outputs, {"x": x})
                if k >= 0:
                    x[:, k] = kept

        return on_threads(block, rows, threads, copy=True)  # each block occludes its own rows in place

    def on_threads(block: Callable[[np.ndarray], None], rows: int, threads: int, copy: bool = False) -> float:
        """Wall time of ``block`` over every chunk's blocks of ``rows`` jets, on ``threads`` threads."""
        total = 0.0
        for x in chunks:
            t0 = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                blocks = [x[s:s + rows].copy() if copy else x[s:s + rows] for s in range(0, len(x), rows)]
                for future in [pool.submit(block, b) for b in blocks]:
                    future.result()
            total += time.perf_counter() - t0
        return total

    def factored(rows: int, threads: int) -> float:
        """The audit's way with the first Gemm computed once per block (model/first_layer.py):
        per block one head call, then per feature δ in numpy and one tail call."""
        passes = tagger.one_thread().factored("x")
        assert passes is not None
        weights = [passes.rows([k]) for k in range(len(builder.features))]
        split = passes.split

        def block(x: np.ndarray) -> None:
            h0 = passes.head.run(None, {"x": x})[0]
            passes.tail.run(passes.outputs, {split.h0: h0, split.delta: np.zeros((len(x), 1), np.float32),
                                             split.w: weights[0]})  # the unoccluded pass
            for k, w in enumerate(weights):
                passes.tail.run(passes.outputs, {split.h0: h0, split.delta: mean[k] - x[:, [k]], split.w: w})

        return on_threads(block, rows, threads)

    spinning = ort.InferenceSession(str(cfg.model.path), providers=["CPUExecutionProvider"])
    one = ort.SessionOptions()
    one.intra_op_num_threads = one.inter_op_num_threads = 1
    single = ort.InferenceSession(str(cfg.model.path), one, providers=["CPUExecutionProvider"])
    threads = block_threads(cfg.model.threads)
    half = shared_rows(CACHED_ROWS)
    times = {
        f"whole chunks, batch {cfg.model.batch_size}": passes(tagger._session, cfg.model.batch_size, False),
        f"blocks of {CACHED_ROWS}, Tagger session": passes(tagger._session, CACHED_ROWS, True),
        f"blocks of {CACHED_ROWS}, spinning session": passes(spinning, CACHED_ROWS, True),
        f"blocks of {half} on {threads} threads, one-thread session": parallel(single, half, threads),
    }
    return times, n_passes, factored(half, threads)


def run_memory(config: Path) -> None:
    import hepaudit

    t0 = time.perf_counter()
    report = hepaudit.audit(config, out=None, progress=False, keep_per_jet=False, warn=False)
    print(json.dumps({"jets": report.data["n_jets"], "seconds": time.perf_counter() - t0,
                      "peak_rss_mb": peak_rss_mb()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jets", type=int, default=200_000)
    parser.add_argument("--step", type=int, default=100_000)
    parser.add_argument("--memory", default="100000,1000000", help="sample sizes for the peak-RSS runs ('' = skip)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "hepaudit-bench")
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best of each side counts")
    parser.add_argument("--cli", action="store_true",
                        help="also time the whole `hepaudit audit` command in a subprocess (start-up included)")
    parser.add_argument("--_memory_child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._memory_child:
        run_memory(args._memory_child)
        return
    import hepaudit

    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    if not args.memory_only:
        folder = args.workdir / f"speed_{args.jets}"
        folder.mkdir(exist_ok=True)
        files = repeated_sample(args.jets, folder)
        config = write_config(folder, files, args.step)
        # interleaved rounds, best of each side: the machine is shared and noisy
        whole = write_config(folder, files, args.step, factored=False)
        audit_s = cli_s = whole_s = pure_factored = float("inf")
        pure: dict[str, float] = {}
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            report = hepaudit.audit(config, out=None, progress=False, keep_per_jet=False, warn=False)
            audit_s = min(audit_s, time.perf_counter() - t0)
            t0 = time.perf_counter()
            whole_report = hepaudit.audit(whole, out=None, progress=False, keep_per_jet=False, warn=False)
            whole_s = min(whole_s, time.perf_counter() - t0)
            if args.cli:
                out = folder / "cli-report"
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "hepaudit.cli", "audit", str(config), "--out", str(out),
                                "--force", "-q"], check=True, capture_output=True,
                               cwd="/")  # `-m` puts the working directory first: not this checkout
                cli_s = min(cli_s, time.perf_counter() - t0)
            seconds, passes, factored_s = pure_onnxruntime_seconds(config)
            pure = {k: min(v, pure.get(k, float("inf"))) for k, v in seconds.items()}
            pure_factored = min(pure_factored, factored_s)
        ort_s = min(pure.values())
        t = report.timing
        print(f"jets: {report.data['n_jets']}, features: {len(report.features)}, forward passes per jet: {passes}")
        print(f"best of {args.rounds} interleaved rounds each")
        print(f"audit (dauc + mad) wall time:        {audit_s:8.1f} s")
        print(f"  of which onnxruntime inside audit: {t['inference_s']:8.1f} s; reading+building {t['read_s']:.1f} s;"
              f" input-mean pass {t['input_stats_s']:.1f} s")
        for way, seconds in pure.items():
            print(f"pure onnxruntime, {passes} passes, {way}: {seconds:8.1f} s")
        print(f"pure onnxruntime, {passes} passes, first Gemm once per block (head + tail sessions): "
              f"{pure_factored:8.1f} s")
        print(f"audit with every occluded pass on the whole graph (model.factor_first_layer = false): "
              f"{whole_s:8.1f} s; factored / whole-graph audit = {audit_s / whole_s:.3f}")
        worst = max(abs(a.score - b.score) for name in ("dauc", "mad")
                    for a, b in zip(sorted(report.explainers[name].feature_importance, key=lambda r: r.feature),
                                    sorted(whole_report.explainers[name].feature_importance, key=lambda r: r.feature)))
        print(f"largest difference of a dauc or mad score, factored against whole graph: {worst:.2e}")
        print(f"RATIO audit / fastest pure onnxruntime = {audit_s / ort_s:.3f}   (target <= 1.3)")
        print(f"RATIO audit / its own passes, pure (factored) = {audit_s / pure_factored:.3f}")
        if args.cli:
            print(f"`hepaudit audit` command, wall (start-up, report and figures written): {cli_s:8.1f} s")
            print(f"RATIO command / fastest pure onnxruntime = {cli_s / ort_s:.3f}   (issue 22 target <= 1.5)")
            print(f"RATIO command / its own passes, pure (factored) = {cli_s / pure_factored:.3f}")
        print(f"baseline AUC {report.explainers['dauc'].fields['baseline_auc']:.4f}")
    for n in [int(x) for x in args.memory.split(",") if x]:
        folder = args.workdir / f"memory_{n}"
        folder.mkdir(exist_ok=True)
        files = repeated_sample(n, folder)
        config = write_config(folder, files, args.step)
        out = subprocess.run([sys.executable, __file__, "--_memory_child", str(config)], capture_output=True,
                             text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"memory: {result['jets']:>8} jets  peak RSS {result['peak_rss_mb']:7.0f} MB  "
              f"({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
