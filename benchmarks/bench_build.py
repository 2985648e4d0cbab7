"""Building a model's inputs from ROOT branches (``InputBuilder.build``) against another revision.

TopoDNN's recipe over ``--jets`` jets (the example sample repeated), read as one chunk. Each
round builds in a fresh process with this tree's hepaudit and with the one at ``--against``
(a git worktree, removed at the end), alternating so both see the machine in the same state:
each process reads the chunk, builds it once to warm up, then times the best of three builds
on one thread and on two. The inputs both revisions built are then compared array for array
(and the jets' four-momenta the builder keeps): a speed-up must not change a number.

    python benchmarks/bench_build.py --against b51b4c3 [--jets 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EXAMPLE_MODEL, REPO, machine, repeated_sample, topodnn_config, worktree  # noqa: E402

THREADS = (1, 2)


def child(config: Path, out: Path) -> None:
    """Time the builds with the hepaudit on ``sys.path``; save what was built to ``out``."""
    from hepaudit.config import load_config
    from hepaudit.data.builders import InputBuilder
    from hepaudit.data.reading import Sample
    from hepaudit.model.session import Tagger
    from hepaudit.plugins import PluginHost

    cfg = load_config(config)
    tagger = Tagger(cfg.model)
    builder = InputBuilder(cfg.inputs, PluginHost().recipes().recipes, tagger.info.inputs)
    sample = Sample(cfg.data)
    sample.check([], builder.jagged_branches)
    raw = next(iter(sample.chunks(builder.branches)))
    built = builder.build(raw.arrays, 1, None)  # warm-up: vector, awkward's kernels
    seconds = {}
    for threads in THREADS:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            builder.build(raw.arrays, threads, None)
            times.append(time.perf_counter() - t0)
        seconds[str(threads)] = min(times)
    jet = builder.jet_momentum(raw.arrays, "x")
    assert jet is not None
    np.savez(out, **built, jet_px=jet.px, jet_py=jet.py, jet_pz=jet.pz, jet_energy=jet.energy)
    print(json.dumps(seconds))


def run_once(tree: Path, config: Path, out: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, __file__, "--_child", str(config), "--_out", str(out)], cwd=tree, env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{tree}: the build failed:\n{done.stderr[-2000:]}")
    return {k: float(v) for k, v in json.loads(done.stdout.splitlines()[-1]).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", help="the baseline revision (a commit, tag or branch)")
    parser.add_argument("--jets", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "hepaudit-bench")
    parser.add_argument("--_child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        child(args._child, args._out)
        return
    if not args.against:
        parser.error("--against REV is required")
    folder = args.workdir / f"build_{args.jets}"
    folder.mkdir(parents=True, exist_ok=True)
    files = repeated_sample(args.jets, folder)
    config = folder / "audit.toml"
    config.write_text(topodnn_config(EXAMPLE_MODEL, files, step=args.jets))
    print(f"machine: {machine()}")
    print(f"jets: {args.jets} in one chunk, TopoDNN recipe; {args.rounds} interleaved rounds; baseline {args.against}")
    with worktree(args.against) as base:
        sides = {"baseline": base, "this tree": REPO}
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
        for _ in range(args.rounds):
            for name, tree in sides.items():
                runs[name].append(run_once(tree, config, folder / f"{name.replace(' ', '_')}.npz"))
                print(f"  {name:10s} " + "  ".join(f"{t} thread(s) {s:6.3f} s" for t, s in runs[name][-1].items()),
                      flush=True)
    medians = {name: {t: statistics.median(r[str(t)] for r in rows) for t in THREADS} for name, rows in runs.items()}
    for threads in THREADS:
        before, after = medians["baseline"][threads], medians["this tree"][threads]
        print(f"{threads} thread(s): baseline {before:.3f} s, this tree {after:.3f} s, RATIO {after / before:.3f}")
    a, b = np.load(folder / "baseline.npz"), np.load(folder / "this_tree.npz")
    same = sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a.files)
    print(f"built inputs and jet four-momenta identical to the baseline's: {same}"
          f"   (load {' '.join(f'{x:.2f}' for x in os.getloadavg())})")


if __name__ == "__main__":
    main()
