"""The sanity check's cost per randomisation step, as a ratio to one audit of the same explainers.

Target (issue 20): quote the cost of one step of the model-parameter randomisation. A step
builds an onnxruntime session for the randomised graph and re-runs every checked explainer on
the check's sample of jets (``jets``, 1000 by default), so its natural unit is one audit of the
same explainers on that many jets. Both are measured in one run, interleaved:

- ``audit``: wall time of ``hepaudit.audit`` with the checked explainers only, ``max_jets`` = the
  check's sample size (what one step repeats, plus reading, the x̄ pass, figures and the report),
  and the sum of those explainers' own ``runtime_s`` (the compute a step repeats);
- ``sanity``: the ``sanity`` explainer's ``runtime_s`` from an audit of the same explainers plus
  ``sanity`` on the whole example sample, divided by its forward re-runs (1 with the trained
  weights + one per cascading step, + one per independent step when on).

Model and jets: the bundled TopoDNN on examples/data/top_qcd_test.root (5000 jets).

    python benchmarks/bench_sanity.py [--jets 1000] [--rounds 3] [--explainers dauc,mad,lrp,gradient,shap]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EXAMPLE_MODEL, EXAMPLE_SAMPLE, machine, topodnn_config  # noqa: E402

OPTIONS = {"shap": "jets = 100\n"}


def config(folder: Path, explainers: list[str], sanity: str | None) -> Path:
    extra = "[execution]\nprogress = false\n"
    for name in explainers:
        extra += f"[explainers.{name}]\n{OPTIONS.get(name, '')}"
    if sanity is not None:
        extra += f"[explainers.sanity]\n{sanity}"
    path = folder / f"bench_{'sanity' if sanity is not None else 'audit'}.toml"
    path.write_text(topodnn_config(EXAMPLE_MODEL, [EXAMPLE_SAMPLE], extra=extra))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jets", type=int, default=1000, help="the sanity check's sample (its option jets)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--explainers", default="dauc,mad,lrp,gradient,shap")
    parser.add_argument("--independent", action="store_true", help="also run the independent variant")
    args = parser.parse_args()

    import hepaudit

    explainers = args.explainers.split(",")
    sanity_options = f"jets = {args.jets}\n" + ("independent = true\n" if args.independent else "")
    print(f"machine: {machine()} | load {os.getloadavg()[0]:.2f}")
    print(f"explainers checked: {', '.join(explainers)}; sanity sample {args.jets} jets")
    audits, own, steps_s, steps = [], [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        plain = config(folder, explainers, None)
        checked = config(folder, explainers, sanity_options)
        hepaudit.audit(plain, out=None, max_jets=args.jets, keep_per_jet=False, warn=False)  # warm caches and imports
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            plain_report = hepaudit.audit(plain, out=None, max_jets=args.jets, keep_per_jet=False, warn=False)
            audits.append(time.perf_counter() - t0)
            own.append(sum(r.runtime_s for r in plain_report.explainers.values()))
            report = hepaudit.audit(checked, out=None, keep_per_jet=False, warn=False)
            result = report.explainers["sanity"]
            assert result.status == "ok", result.error
            steps = len(result.fields["steps"])
            runs = 1 + steps * (2 if args.independent else 1)
            steps_s.append(result.runtime_s / runs)
    audit_s, step_s, own_s = statistics.median(audits), statistics.median(steps_s), statistics.median(own)
    print(f"cascading steps: {steps} (+1 run with the trained weights"
          + (f", +{steps} independent)" if args.independent else ")"))
    print(f"one audit of the same explainers on {args.jets} jets: {audit_s:.3f} s (median of {args.rounds})")
    print(f"sanity, per re-run of the explainers:            {step_s:.3f} s (median of {args.rounds})")
    print(f"  of which the explainers' own runtime_s:        {own_s:.3f} s")
    print(f"ratio (one sanity step / one audit):              {step_s / audit_s:.2f}")
    print(f"ratio (one sanity step / the explainers' time):   {step_s / own_s:.2f}")
    print(f"whole sanity check / one audit:                   {step_s * (1 + steps) / audit_s:.2f}"
          + (" (cascading only)" if args.independent else ""))


if __name__ == "__main__":
    main()
