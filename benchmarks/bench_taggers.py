"""Every explainer on every collaboration tagger: time per jet and peak memory, as ratios to one
onnxruntime forward pass of the same jets (issue 18).

Each (model, explainer) pair runs in a fresh process: the audit of ``--jets`` jets of the
tests' sample (tests/taggers.py: real generator-level jets, synthetic detector variables)
with that explainer alone (SHAP: 2 jets per class, 256 coalitions each), at the default chunk
size, timed by the explainer's own
``runtime_s``; its peak resident memory is the process's. The baseline, also in a fresh
process: one onnxruntime forward pass of the same jets through the tagger (best of 3), and
that process's peak memory. Needs ../shared/external-models.

    python benchmarks/bench_taggers.py                       # every model, every explainer
    python benchmarks/bench_taggers.py --models deepjet_run3 --explainers lrp,gradient --jets 32
    python benchmarks/bench_taggers.py --models particlenet_ak8 --jets 400 --step-size 400   # one chunk
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import machine  # noqa: E402

EXPLAINERS = ["dauc", "mad", "shap", "nap", "lrp", "gradient"]

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {tests!r})
from pathlib import Path
from builders import toml_dumps
from taggers import BY_NAME
case = BY_NAME[{model!r}]
mode, explainer, data, folder = {mode!r}, {explainer!r}, Path({data!r}), Path({folder!r})
grouped = case.name != "hls4ml_mlp"
occlusion = {{"features": False, "groups": ["feature"]}} if grouped else {{}}
shap = ({{"groups": "feature"}} if grouped else {{}}) | {{"jets": 2, "samples": 256}}
tables = {{"dauc": occlusion, "mad": occlusion, "shap": shap,
          "nap": {{}}, "lrp": {{}}, "gradient": {{}}}}
config = folder / f"{{case.name}}-{{explainer}}.toml"
doc = case.config(data, {{explainer: tables[explainer]}} if explainer else {{"dauc": occlusion}})
if {step!r}:
    doc["data"]["step_size"] = {step!r}
config.write_text(toml_dumps(doc))
out = {{}}
if mode == "forward":
    from hepaudit.config import load_config
    from hepaudit.data.builders import InputBuilder
    from hepaudit.model.session import Tagger
    import uproot
    cfg = load_config(config)
    tagger = Tagger(cfg.model)
    builder = InputBuilder(cfg.inputs, {{}}, tagger.info.inputs)
    with uproot.open(data) as f:
        inputs = builder.build(f["jets"].arrays(builder.branches))
    tagger.run({{k: v[:1] for k, v in inputs.items()}}, extra=False)  # footprint learnt, session warm
    best = 1e9
    for _ in range(3):
        t0 = time.perf_counter()
        tagger.run(inputs, extra=False)
        best = min(best, time.perf_counter() - t0)
    out = {{"seconds": best, "jets": len(next(iter(inputs.values())))}}
else:
    from hepaudit import audit
    report = audit(config, out=None, keep_per_jet=False, warn=False)
    result = report.explainers[explainer]
    out = {{"seconds": result.runtime_s, "status": result.status, "error": (result.error or "")[:200],
           "jets": report.data["n_jets"]}}
out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(out))
"""


def child(model: str, mode: str, explainer: str, data: Path, folder: Path, step: int = 0) -> dict[str, object]:
    code = CHILD.format(tests=str(Path(__file__).resolve().parents[1] / "tests"), model=model, mode=mode,
                        explainer=explainer, data=str(data), folder=str(folder), step=step)
    env = dict(os.environ, HEPAUDIT_QUIET_WORKERS="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1800)
    line = next((row for row in proc.stdout.splitlines() if row.startswith("RESULT ")), None)
    if line is None:
        return {"status": "crashed", "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return dict(json.loads(line[len("RESULT "):]))


def main() -> None:
    from taggers import CASES, EXTERNAL, write_sample

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(c.name for c in CASES))
    parser.add_argument("--explainers", default=",".join(EXPLAINERS))
    parser.add_argument("--jets", type=int, default=16, help="jets per model (half signal, half background)")
    parser.add_argument("--step-size", type=int, default=0, help="data.step_size (default: the tests' 64)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not EXTERNAL.exists():
        sys.exit(f"{EXTERNAL} is absent: nothing to measure")
    print(machine())
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = write_sample(folder / "jets.root", per_class=args.jets // 2)
        print(f"{args.jets} jets per model; ratios to one onnxruntime forward pass of the same jets\n")
        print("| model | forward (s) | forward peak (MB) | explainer | time / forward | peak MB | "
              "peak / forward peak | status |")
        print("|---|---|---|---|---|---|---|---|")
        for model in args.models.split(","):
            base = child(model, "forward", "", data, folder, args.step_size)
            results[model] = {"forward": base}
            for name in args.explainers.split(","):
                r = child(model, "audit", name, data, folder, args.step_size)
                results[model][name] = r
                ratio = (float(r["seconds"]) / float(base["seconds"])) if "seconds" in r and "seconds" in base else None
                mem = (float(r["peak_mb"]) / float(base["peak_mb"])) if "peak_mb" in r and "peak_mb" in base else None
                fwd, fwd_mb = float(base.get("seconds", 0)), float(base.get("peak_mb", 0))
                print(f"| {model} | {fwd:.3f} | {fwd_mb:.0f} | {name} | "
                      f"{'' if ratio is None else f'{ratio:.1f}'} | {float(r.get('peak_mb', 0)):.0f} | "
                      f"{'' if mem is None else f'{mem:.2f}'} | {r.get('status')} {r.get('error') or ''} |",
                      flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
