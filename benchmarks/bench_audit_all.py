"""Every built-in explainer in one audit against the ΔAUC + MAD audit of the same jets (issue 22).

The audit a newcomer runs first: dauc, mad, shap, lrp, gradient (integrated gradients), nap,
latent, ood_ae and calibration on the bundled TopoDNN, with the example test sample as the
reference, over ``--jets`` jets (the example sample repeated). The baseline is the dauc + mad
audit of the same jets. Both run in this process (``hepaudit.audit``, ``out`` written, figures
drawn), ``--rounds`` interleaved rounds; medians are compared, and each explainer's own
``runtime_s`` (median) is printed so the slowest one is named. Target: all / dauc+mad <= 3.
The full audit also runs with ``[report] figure_processes = 1`` (every figure drawn in the
audit's own process, as before the helper), interleaved with the others, for the helper's gain.

    python benchmarks/bench_audit_all.py [--jets 6000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EXAMPLE_MODEL, EXAMPLE_SAMPLE, machine, repeated_sample, topodnn_config  # noqa: E402

ALL = """[explainers.dauc]
[explainers.mad]
[explainers.shap]
[explainers.lrp]
[explainers.gradient]
method = "integrated_gradients"
[explainers.nap]
[explainers.latent]
[explainers.ood_ae]
[explainers.calibration]
"""
BASE = "[explainers.dauc]\n[explainers.mad]\n"


def _config(folder: Path, files: list[Path], explainers: str, name: str) -> Path:
    reference = f'[reference]\nfiles = ["{EXAMPLE_SAMPLE}"]\ntree = "jets"\nlabel = "is_signal"\n'
    path = folder / name
    path.write_text(topodnn_config(EXAMPLE_MODEL, files, extra=reference + "[execution]\nprogress = false\n"
                                   + explainers))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jets", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "hepaudit-bench")
    args = parser.parse_args()
    import hepaudit

    folder = args.workdir / f"all_{args.jets}"
    folder.mkdir(parents=True, exist_ok=True)
    files = repeated_sample(args.jets, folder)
    one = "[report]\nfigure_processes = 1\n"
    configs = {"all": _config(folder, files, ALL, "all.toml"), "dauc+mad": _config(folder, files, BASE, "base.toml"),
               "all, 1 pr": _config(folder, files, one + ALL, "all_one.toml")}
    walls: dict[str, list[float]] = {k: [] for k in configs}
    runtimes: dict[str, list[float]] = {}
    figures: list[float] = []
    for _ in range(args.rounds):
        for name, config in configs.items():
            out = folder / f"out_{name}"
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            report = hepaudit.audit(config, out=out, progress=False, warn=False)
            walls[name].append(time.perf_counter() - t0)
            if name == "all":
                bad = {k: r.status for k, r in report.explainers.items() if r.status != "ok"}
                assert not bad, bad
                for k, r in report.explainers.items():
                    runtimes.setdefault(k, []).append(r.runtime_s)
                figures.append(report.timing.get("figures_s", 0.0))
    print(f"machine: {machine()}")
    print(f"jets: {args.jets}; {args.rounds} interleaved rounds, medians")
    med = {k: statistics.median(v) for k, v in walls.items()}
    for name, seconds in med.items():
        print(f"  audit {name:<9} wall {seconds:7.2f} s  (range {min(walls[name]):.2f}-{max(walls[name]):.2f})")
    print("  each explainer's runtime_s in the full audit:")
    for k, v in sorted(runtimes.items(), key=lambda kv: -statistics.median(kv[1])):
        print(f"    {k:<12} {statistics.median(v):6.2f} s")
    print(f"    figures      {statistics.median(figures):6.2f} s (every figure; a helper process draws beside)")
    print(f"RATIO all / dauc+mad = {med['all'] / med['dauc+mad']:.2f}   (target <= 3)")
    print(f"  with every figure drawn in one process: {med['all, 1 pr'] / med['dauc+mad']:.2f}")


if __name__ == "__main__":
    main()
