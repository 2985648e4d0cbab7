"""The cost of the error bars: the demo audit with the Poisson bootstrap (``execution.bootstrap``,
default 32 replicates) against the same audit without it, in one run.

Each configuration runs ``--repeat`` times in this process (best wall time kept); reported:
the audit's wall time and each explainer's ``runtime_s``, with the ratio bootstrap / none.

    python benchmarks/bench_bootstrap.py                 # the 5000 demo jets
    python benchmarks/bench_bootstrap.py --jets 2000 --replicates 64
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, machine  # noqa: E402

EXPLAINERS = """
[explainers.dauc]
[explainers.mad]
[explainers.lrp]
[explainers.gradient]
[explainers.shap]
jets = 20
"""


def config(folder: Path, replicates: int) -> Path:
    examples = REPO / "examples"
    text = (examples / "audit_topodnn.toml").read_text()
    text = text.replace('path = "models/', f'path = "{examples}/models/').replace(
        'files = ["data/', f'files = ["{examples}/data/')
    execution = f"\n[execution]\nprogress = false\nbootstrap = {replicates}\n"
    text = text[:text.index("[explainers.")] + execution + EXPLAINERS
    path = folder / f"boot{replicates}.toml"
    path.write_text(text)
    return path


def main() -> None:
    import hepaudit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jets", type=int, default=5000)
    parser.add_argument("--replicates", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    print(machine())
    best: dict[int, tuple[float, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for replicates in (0, args.replicates):
                path = config(Path(tmp), replicates)
                t0 = time.perf_counter()
                report = hepaudit.audit(path, out=None, max_jets=args.jets, keep_per_jet=False, warn=False)
                wall = time.perf_counter() - t0
                runtimes = {n: r.runtime_s for n, r in report.explainers.items()}
                if replicates not in best or wall < best[replicates][0]:
                    best[replicates] = (wall, runtimes)
    (w0, r0), (w1, r1) = best[0], best[args.replicates]
    print(f"{args.jets} jets, {args.replicates} replicates; best of {args.repeat}\n")
    print("| | no bootstrap (s) | bootstrap (s) | ratio |")
    print("|---|---|---|---|")
    print(f"| audit wall | {w0:.2f} | {w1:.2f} | {w1 / w0:.2f} |")
    for name in r0:
        print(f"| {name} | {r0[name]:.2f} | {r1[name]:.2f} | {r1[name] / max(r0[name], 1e-9):.2f} |")


if __name__ == "__main__":
    main()
