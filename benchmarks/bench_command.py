"""The `hepaudit audit` command, whole, against the same command at another revision.

Start-up, the plan's checks, reading, the explainers, the figures and the files written: what
a user waits for. Each round runs the command once from this working tree and once from a git
worktree of ``--against`` (made here, removed at the end), in fresh processes, alternating, so
both see the machine in the same state; medians over the rounds are compared. Printed per run:
the wall time, the report's own ``total_s`` (from the audit's start: the difference is the
interpreter's start-up and imports) and ``figures_s``.

``--against-path`` puts extra folders first on the baseline's ``PYTHONPATH`` (e.g. a folder
with another version of a dependency, installed there with ``pip install --target``), so a
change of dependency can be measured the same way.

    python benchmarks/bench_command.py --against 28e1820 [--config examples/audit_topodnn.toml] [--rounds 3]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, worktree  # noqa: E402


def run_once(tree: Path, config: Path, out: Path, pythonpath: list[str]) -> tuple[float, float, float]:
    """(wall, total_s, figures_s) of one `hepaudit audit` run with the hepaudit of ``tree``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*pythonpath, str(tree)])}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hepaudit.cli", "audit", str(config), "--out", str(out), "--force",
                           "-q"], cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode not in (0, 1):  # 1: a gate failed, the report is still complete
        raise SystemExit(f"{tree}: hepaudit audit failed ({done.returncode}):\n{done.stderr[-2000:]}")
    timing = json.loads((out / "report.json").read_text())["timing"]
    return wall, float(timing["total_s"]), float(timing.get("figures_s", 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="the baseline revision (a commit, tag or branch)")
    parser.add_argument("--config", type=Path, default=REPO / "examples" / "audit_topodnn.toml")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against-path", default="", help="folders put first on the baseline's PYTHONPATH "
                                                            f"(separated by {os.pathsep!r})")
    args = parser.parse_args()
    config = args.config.resolve()
    print(f"machine: {machine()}")
    print(f"config: {config}; {args.rounds} interleaved rounds; baseline {args.against}")
    with tempfile.TemporaryDirectory(prefix="hepaudit-bench-command-") as tmp, worktree(args.against) as base:
        sides = {"baseline": (base, [p for p in args.against_path.split(os.pathsep) if p]), "this tree": (REPO, [])}
        runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in sides}
        for _ in range(args.rounds):
            for name, (tree, path) in sides.items():
                runs[name].append(run_once(tree, config, Path(tmp) / name.replace(" ", "_"), path))
                wall, total, figures = runs[name][-1]
                print(f"  {name:10s} wall {wall:6.2f} s  total_s {total:6.2f} s  figures_s {figures:5.2f} s",
                      flush=True)
    medians = {name: [statistics.median(r[i] for r in rows) for i in range(3)] for name, rows in runs.items()}
    for name, (wall, total, figures) in medians.items():
        print(f"{name:10s} median wall {wall:6.2f} s  (start-up and imports {wall - total:5.2f} s, "
              f"figures {figures:5.2f} s)")
    print(f"RATIO this tree / baseline, wall = {medians['this tree'][0] / medians['baseline'][0]:.3f}"
          f"   (load {' '.join(f'{x:.2f}' for x in os.getloadavg())})")


if __name__ == "__main__":
    main()
