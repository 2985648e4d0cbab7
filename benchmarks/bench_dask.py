"""Jets per second and memory: the local executor against Dask with 1 and 2 workers.

dauc + mad on TopoDNN over the example sample repeated into several files. Every mode runs
in its own process (so each peak RSS is its own) on the same files:

- ``local``: the local executor, onnxruntime with ``--local-threads`` threads (default 2:
  both cores of the reference machine);
- ``dask1`` / ``dask2``: a LocalCluster of 1 or 2 worker processes, 1 thread each and
  onnxruntime held to one thread per process (``model.threads = 1``), Dask's default worker
  settings (``--no-trim-threshold``: without ``MALLOC_TRIM_THRESHOLD_``, docs/dask.md). The
  audit is timed on a running cluster; its start-up is printed apart.

Targets (issue 9): dask2 ≥ 1.7 × dask1 and dask2 ≥ 0.9 × local in jets/s; local peak RSS
≤ 1.5 GB on 2M jets. Worker memory against the number of files: ``--files-memory 2,8``
runs mad alone (a state of fixed size) over 2 and 8 files on 2 workers and prints each
worker's peak RSS.

When ``examples/models/topodnn.onnx`` is missing, a TopoDNN-shaped MLP (90-300-102-12-6-1,
ReLU, sigmoid) with random weights stands in; the line ``model:`` says which was used.

    python benchmarks/bench_dask.py --jets 2000000
    python benchmarks/bench_dask.py --jets 100000 --per-file 25000   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import EXAMPLE_MODEL, machine, peak_rss_mb, random_topodnn, repeated_sample, topodnn_config  # noqa: E402


def model_path(workdir: Path) -> tuple[Path, str]:
    if EXAMPLE_MODEL.exists():
        return EXAMPLE_MODEL, f"{EXAMPLE_MODEL.name} (the example TopoDNN)"
    path = random_topodnn(workdir / "topodnn_random.onnx", seed=1)
    return path, "a TopoDNN-shaped random MLP 90-300-102-12-6-1 (examples/models/topodnn.onnx is missing)"


def write_config(path: Path, model: Path, files: list[Path], step: int, partition: int, threads: int,
                 explainers: list[str], batch: int | None = None, options: str = "") -> Path:
    """``options``: "mad.iqr_clip=true,mad.target=\"logit\"" (TOML values) under the explainers' tables."""
    settings: dict[str, list[str]] = {}
    for item in filter(None, options.split(",")):
        key, value = item.split("=", 1)
        name, option = key.strip().split(".", 1)
        settings.setdefault(name, []).append(f"{option} = {value.strip()}")
    tables = "\n".join("\n".join([f"[explainers.{e}]", *settings.get(e, [])]) for e in explainers)
    model_extra = f"threads = {threads}" + (f"\nbatch_size = {batch}" if batch else "")
    path.write_text(topodnn_config(model, files, step=step, model_extra=model_extra,
                                   extra=f"[execution]\nprogress = false\npartition_size = {partition}\n{tables}"))
    return path


def child(config: Path, mode: str) -> None:
    """One mode, in this fresh process; prints one JSON line."""
    import hepaudit

    out: dict[str, object] = {"mode": mode}
    if mode == "local":
        t0 = time.perf_counter()
        report = hepaudit.audit(config, out=None, progress=False, keep_per_jet=False, warn=False)
        out["seconds"] = time.perf_counter() - t0
    else:
        import resource

        import dask
        import distributed

        workers = int(mode.removeprefix("dask"))
        t0 = time.perf_counter()
        # --no-trim-threshold: workers without Dask's MALLOC_TRIM_THRESHOLD_ (docs/dask.md, "Memory")
        unset = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
        with dask.config.set(unset if os.environ.get("HEPAUDIT_BENCH_NO_TRIM") else {}), distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster, distributed.Client(cluster) as client:
            out["startup_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            report = hepaudit.audit(config, out=None, progress=False, scheduler=client, keep_per_jet=False, warn=False)
            out["seconds"] = time.perf_counter() - t0
            # the client's own CPU (scheduler, results, finish): on 2 cores it competes with 2 workers
            out["client_cpu_s"] = time.process_time() - cpu0
            rss = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            out["worker_peak_rss_mb"] = sorted(rss.values())
    out["jets"] = report.data["n_jets"]
    out["timing"] = {k: round(v, 2) for k, v in report.timing.items() if isinstance(v, float)}
    out["peak_rss_mb"] = peak_rss_mb()
    out["auc"] = report.explainers["dauc"].fields.get("baseline_auc") if "dauc" in report.explainers else None
    out["top"] = [s.feature for s in (next(iter(report.explainers.values())).feature_importance or [])[:3]]
    print(json.dumps(out))


def run_mode(config: Path, mode: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--_child", str(config), "--_mode", mode],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jets", type=int, default=2_000_000)
    parser.add_argument("--per-file", type=int, default=250_000, help="jets per generated file")
    parser.add_argument("--step", type=int, default=50_000, help="data.step_size")
    parser.add_argument("--partition", type=int, default=100_000, help="execution.partition_size (Dask)")
    parser.add_argument("--local-threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=None, help="model.batch_size (default: hepaudit's)")
    parser.add_argument("--modes", default="local,dask1,dask2")
    parser.add_argument("--explainers", default="dauc,mad")
    parser.add_argument("--options", default="", help='explainer options, e.g. "mad.iqr_clip=true,mad.relative=true"')
    parser.add_argument("--files-memory", default="", help="e.g. 2,8: worker RSS with mad over that many files")
    parser.add_argument("--no-trim-threshold", action="store_true",
                        help="Dask workers without MALLOC_TRIM_THRESHOLD_ (faster, more resident memory)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "hepaudit-bench-dask")
    parser.add_argument("--_child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        child(args._child, args._mode)
        return

    if args.no_trim_threshold:  # the children read it
        os.environ["HEPAUDIT_BENCH_NO_TRIM"] = "1"
    args.workdir.mkdir(parents=True, exist_ok=True)
    model, model_text = model_path(args.workdir)
    print(f"machine: {machine()}")
    print(f"model: {model_text}")
    print("Dask workers: " + ("without MALLOC_TRIM_THRESHOLD_" if args.no_trim_threshold else "Dask's defaults"))
    explainers = [e for e in args.explainers.split(",") if e]
    results: dict[str, dict] = {}
    if args.modes:
        folder = args.workdir / f"jets_{args.jets}_{args.per_file}"
        folder.mkdir(exist_ok=True)
        files = repeated_sample(args.jets, folder, per_file=args.per_file)
        print(f"sample: {args.jets} jets in {len(files)} files; step_size {args.step}, partition {args.partition}; "
              f"explainers {', '.join(explainers)}" + (f" ({args.options})" if args.options else ""))
        for mode in args.modes.split(","):
            threads = args.local_threads if mode == "local" else 1
            config = write_config(folder / f"{mode}.toml", model, files, args.step, args.partition, threads,
                                  explainers, args.batch, args.options)
            r = results[mode] = run_mode(config, mode)
            line = (f"{mode:>6}: {r['jets']} jets in {r['seconds']:7.1f} s = {r['jets'] / r['seconds']:9.0f} jets/s; "
                    f"peak RSS {'client' if mode != 'local' else 'process'} {r['peak_rss_mb']:6.0f} MB")
            if mode != "local":
                line += (f", workers {', '.join(f'{m:.0f}' for m in r['worker_peak_rss_mb'])} MB; "
                         f"cluster start-up {r['startup_s']:.1f} s; client CPU {r['client_cpu_s']:.1f} s")
            print(line + (f"; thread(s) for onnxruntime: {threads}"))
            print(f"        timing: {r['timing']}")
        aucs = {m: r["auc"] for m, r in results.items()}
        if len(set(aucs.values())) > 1:
            print(f"WARNING: the baseline AUCs differ: {aucs}")
        rate = {m: r["jets"] / r["seconds"] for m, r in results.items()}
        if "dask1" in rate and "dask2" in rate:
            print(f"RATIO dask2 / dask1 throughput = {rate['dask2'] / rate['dask1']:.2f}   (target >= 1.8, issue 22)")
        if "local" in rate and "dask2" in rate:
            print(f"RATIO dask2 / local({args.local_threads} threads) throughput = "
                  f"{rate['dask2'] / rate['local']:.2f}   (target >= 0.9)")
        if "local" in results:
            print(f"local peak RSS {results['local']['peak_rss_mb']:.0f} MB over {results['local']['jets']} jets "
                  "(target <= 1500 MB at 2M jets)")
    for n_files in [int(x) for x in args.files_memory.split(",") if x]:
        folder = args.workdir / f"memory_{n_files}x{args.per_file}"
        folder.mkdir(exist_ok=True)
        files = repeated_sample(n_files * args.per_file, folder, per_file=args.per_file)
        config = write_config(folder / "mad.toml", model, files, args.step, args.partition, 1, ["mad"])
        r = run_mode(config, "dask2")
        print(f"memory: mad over {n_files} files ({r['jets']} jets) on 2 workers: worker peak RSS "
              f"{', '.join(f'{m:.0f}' for m in r['worker_peak_rss_mb'])} MB ({r['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
