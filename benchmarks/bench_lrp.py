"""LRP-ε throughput: hepaudit's numpy backward engine against captum's LRP and onnxruntime.

Targets (issue 4), over 100k TopoDNN jets on the same CPU in one run:
  * hepaudit LRP-ε (onnxruntime forward with the hidden tensors exposed + numpy backward)
    at least as fast as captum.attr.LRP on the equivalent PyTorch model (built here from
    the ONNX weights);
  * at most 4 × the time of one plain onnxruntime forward pass over the same jets.
Every timing is the median of ``--repeat`` (3) runs, the contenders interleaved in each
round, so the machine's load hits them alike. The plain forward is timed with onnxruntime's
default options and without spinning threads; the ratio uses the faster of the two.

Also checks that both give the same relevance (captum's LRP-ε on Linear layers is the same
rule, seeded with the same logit: the PyTorch copy has no Sigmoid). In float32 the two
differ where a hidden unit has |z| close to ε (the float32 rounding of z, different in
onnxruntime and torch, is amplified by 1/(z + ε)), so the check is also made in float64,
where it is exact, and each float32 result is compared with the float64 one. Uses
examples/models/topodnn.onnx when present, otherwise a TopoDNN-shaped (90-300-102-12-6-1)
ReLU MLP with random weights, and says which.

    python benchmarks/bench_lrp.py [--jets 100000] [--chunk 10000] [--repeat 3]

Needs torch and captum (benchmark only): pip install captum
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from builders import as_double  # noqa: E402
from common import EXAMPLE_MODEL, EXAMPLE_SAMPLE, machine  # noqa: E402

from hepaudit.config import ModelConfig  # noqa: E402
from hepaudit.model.backward import BackwardEngine, RuleSet, ScoreTarget  # noqa: E402
from hepaudit.model.backward.blocked import BlockedBackward  # noqa: E402
from hepaudit.model.graph import find_head  # noqa: E402
from hepaudit.model.session import Tagger  # noqa: E402


def topodnn_model() -> tuple[onnx.ModelProto, str]:
    if EXAMPLE_MODEL.exists():
        return onnx.load(str(EXAMPLE_MODEL)), f"{EXAMPLE_MODEL} (trained example)"
    from builders import dense_weights, mlp_model

    return (
        mlp_model(dense_weights([90, 300, 102, 12, 6, 1], seed=0), "gemm"),
        "TopoDNN-shaped 90-300-102-12-6-1 ReLU MLP with random weights (examples/models/topodnn.onnx absent)",
    )


def dense_layers(model: onnx.ModelProto) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W (in, out), b) of each Gemm/MatMul(+Add) in graph order, for the PyTorch copy."""
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    layers = []
    for node in model.graph.node:
        if node.op_type == "Gemm":
            w = inits[node.input[1]]
            trans = any(a.name == "transB" and a.i for a in node.attribute)
            layers.append(((w.T if trans else w).copy(), inits[node.input[2]]))
        elif node.op_type == "MatMul":
            layers.append((inits[node.input[1]], np.zeros(inits[node.input[1]].shape[1], np.float32)))
        elif node.op_type == "Add" and layers and node.input[1] in inits:
            layers[-1] = (layers[-1][0], inits[node.input[1]])
    return layers


def torch_copy(layers: list[tuple[np.ndarray, np.ndarray]], dtype: object, epsilon: float) -> object:
    """The network as torch Linear + ReLU layers (no Sigmoid: captum seeds with the logit)."""
    import torch
    from captum.attr._utils.lrp_rules import EpsilonRule

    mods: list[torch.nn.Module] = []
    for i, (w, b) in enumerate(layers):
        lin = torch.nn.Linear(w.shape[0], w.shape[1]).to(dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w.T.copy()))
            lin.bias.copy_(torch.from_numpy(np.array(b)))
        lin.rule = EpsilonRule(epsilon=epsilon)
        mods.append(lin)
        if i < len(layers) - 1:
            mods.append(torch.nn.ReLU())
    return torch.nn.Sequential(*mods).eval()


def topodnn_jets(n: int) -> tuple[np.ndarray, str]:
    """TopoDNN inputs of the example top/QCD jets (hepaudit's topodnn recipe), repeated to n
    rows; uniform random inputs when the example sample is absent."""
    if not EXAMPLE_SAMPLE.exists():
        x = np.random.default_rng(0).uniform(0, 0.5, (n, 90)).astype(np.float32)
        return x, "uniform random inputs in [0, 0.5) (examples/data/top_qcd_test.root absent)"
    import uproot

    from hepaudit.data.recipes import topodnn_arrays

    with uproot.open(EXAMPLE_SAMPLE) as f:
        a = f["jets"].arrays(["part_px", "part_py", "part_pz", "part_energy"])
    base = np.asarray(topodnn_arrays(a.part_px, a.part_py, a.part_pz, a.part_energy, 30), np.float32)
    x = np.ascontiguousarray(base[np.arange(n) % len(base)])
    return x, f"{EXAMPLE_SAMPLE.name} ({len(base)} jets, topodnn recipe) repeated to {n} jets"


def _audit_config(n_jets: int) -> Path:
    """An LRP audit of the example jets repeated to ``n_jets`` (the jets topodnn_jets uses)."""
    from common import repeated_sample, topodnn_config

    folder = Path(tempfile.gettempdir()) / "hepaudit-bench" / f"lrp_{n_jets}"
    folder.mkdir(parents=True, exist_ok=True)
    files = repeated_sample(n_jets, folder)
    path = folder / "audit.toml"
    path.write_text(topodnn_config(EXAMPLE_MODEL, files, extra="[execution]\nprogress = false\n[explainers.lrp]\n"))
    return path


def median(values: list[float]) -> float:
    return float(np.median(values))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jets", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--audit", action="store_true",
                        help="also run the lrp explainer in hepaudit.audit on the same jets (fixed costs "
                             "included: engine build, exposed session) and compare its runtime_s with captum")
    args = parser.parse_args()
    import torch
    from captum.attr import LRP

    from hepaudit.model.graph import with_extra_outputs

    epsilon = 1e-6
    model, what = topodnn_model()
    head = find_head(model, model.graph.output[0].name)
    assert head is not None
    x, data = topodnn_jets(args.jets)
    chunks = [x[i : i + args.chunk] for i in range(0, len(x), args.chunk)]
    threads = 2
    torch.set_num_threads(threads)

    def session(proto: onnx.ModelProto, spinning: bool) -> ort.InferenceSession:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        if not spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    plain = {spin: session(model, spin) for spin in (True, False)}
    name = plain[True].get_inputs()[0].name
    out_name = plain[True].get_outputs()[0].name

    target = ScoreTarget(head.logit, head.op)
    engine = BackwardEngine(model, target, dtype=np.float32)  # as the explainer (default blocks, BLAS threads)
    # as the explainer runs it: the audit's Tagger, hidden tensors exposed, no spinning threads,
    # and the executor's one scoring run per chunk (scratch arrays for the hidden tensors)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(model, str(path))
        tagger = Tagger(ModelConfig(str(path), threads=threads))
    tagger.expose([], spinning=False)
    blocked = BlockedBackward(tagger, engine)  # as the explainer: hidden tensors exposed block by block
    rules = RuleSet("epsilon", epsilon=epsilon)

    def run_plain(spin: bool) -> float:
        t0 = time.perf_counter()
        for c in chunks:
            plain[spin].run([out_name], {name: c})
        return time.perf_counter() - t0

    def run_hepaudit() -> tuple[float, float, np.ndarray]:
        """The explainer's path (BlockedBackward.relevance), and the forward alone on the same blocks
        (the hidden tensors exposed, no backward): the backward is the difference."""
        fwd = total = 0.0
        first = None
        for c in chunks:
            t0 = time.perf_counter()
            blocked._each_block({name: c}, lambda start, m, values: None)
            t1 = time.perf_counter()
            rel = blocked.relevance({name: c}, rules).relevance[name]
            total += time.perf_counter() - t1
            fwd += t1 - t0
            first = rel if first is None else first
        assert first is not None
        return fwd, total - fwd, first

    layers = dense_layers(model)
    lrp = LRP(torch_copy(layers, torch.float32, epsilon))

    def run_captum() -> tuple[float, np.ndarray]:
        t0 = time.perf_counter()
        first = None
        for c in chunks:
            a = lrp.attribute(torch.from_numpy(c), target=0).detach().numpy()
            first = a if first is None else first
        assert first is not None
        return time.perf_counter() - t0, first

    audit_config = _audit_config(args.jets) if args.audit else None

    def run_audit() -> float:
        import hepaudit

        assert audit_config is not None
        report = hepaudit.audit(audit_config, out=None, progress=False, keep_per_jet=False, warn=False)
        return float(report.explainers["lrp"].runtime_s)

    run_plain(True), run_plain(False), run_hepaudit()  # warm up sessions and caches
    times: dict[str, list[float]] = {
        k: [] for k in ("plain", "plain_nospin", "fwd", "bwd", "total", "captum", "audit")
    }
    for _ in range(args.repeat):  # interleaved rounds: the machine's load hits every contender alike
        times["plain"].append(run_plain(True))
        times["plain_nospin"].append(run_plain(False))
        t_fwd, t_bwd, rel = run_hepaudit()
        times["fwd"].append(t_fwd)
        times["bwd"].append(t_bwd)
        times["total"].append(t_fwd + t_bwd)
        t_cap, cap = run_captum()
        times["captum"].append(t_cap)
        if audit_config is not None:
            times["audit"].append(run_audit())
    med = {k: median(v) for k, v in times.items() if v}
    t_plain = min(med["plain"], med["plain_nospin"])  # the stricter baseline
    t_total, t_captum = med["total"], med["captum"]

    def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))

    # the same comparison in float64: hepaudit on onnxruntime's float64 forward, captum on a double copy
    c0 = chunks[0].astype(np.float64)
    double = as_double(model)
    engine64 = BackwardEngine(double, target, dtype=np.float64)
    vals64 = dict(
        zip(
            engine64.needed,
            session(with_extra_outputs(double, engine64.needed), False).run(engine64.needed, {name: c0}),
        )
    )
    vals64[name] = c0
    rel64 = engine64.relevance(vals64, rules).relevance[name]
    cap64 = LRP(torch_copy(layers, torch.float64, epsilon)).attribute(torch.from_numpy(c0), target=0)
    cap64 = cap64.detach().numpy()
    # per jet, among jets with some relevance (a jet whose logit path is all-zero has none)
    scale = np.max(np.abs(cap), axis=1)
    some = scale > 0
    per_jet = np.max(np.abs(rel - cap), axis=1)[some] / scale[some]

    print(f"machine: {machine()}")
    print(f"model: {what}")
    print(f"data: {data}")
    print(
        f"jets: {args.jets}, chunk {args.chunk}, threads {threads}; rule LRP-epsilon, epsilon = {epsilon:g}; "
        f"median of {args.repeat} interleaved runs"
    )
    print(
        f"onnxruntime plain forward:              {med['plain']:8.3f} s  "
        f"({args.jets / med['plain']:,.0f} jets/s)"
    )
    print(f"onnxruntime plain forward, no spinning: {med['plain_nospin']:8.3f} s")
    print(f"hepaudit LRP: exposed forward alone     {med['fwd']:8.3f} s  (the same blocks, no backward)")
    print(f"hepaudit LRP: numpy backward (the rest) {med['bwd']:8.3f} s")
    print(f"hepaudit LRP total:                     {t_total:8.3f} s  ({args.jets / t_total:,.0f} jets/s)")
    print(
        f"captum LRP (torch {torch.__version__}):       {t_captum:8.3f} s  "
        f"({args.jets / t_captum:,.0f} jets/s)"
    )
    print(
        f"ratio hepaudit / onnxruntime forward:   {t_total / t_plain:6.2f}  (target <= 4; backward alone "
        f"{med['bwd'] / t_plain:.2f}; vs the faster plain forward)"
    )
    print(f"ratio captum / hepaudit (speed-up):     {t_captum / t_total:6.2f}  (target >= 1)")
    if "audit" in med:
        print(f"hepaudit.audit lrp runtime_s:           {med['audit']:8.3f} s  (reading, scoring, figures not in it)")
        print(f"ratio audit runtime_s / captum:         {med['audit'] / t_captum:6.2f}  (issue 22 target <= 1)")
        print(f"ratio audit runtime_s / plain forward:  {med['audit'] / t_plain:6.2f}")
    print("agreement with captum on the first chunk, max |R_hepaudit - R_captum| / max |R_captum|:")
    print(
        f"  float32 (both as benchmarked):        {rel_diff(rel, cap):.2e}  (per jet: median "
        f"{np.median(per_jet):.1e}, 99th percentile {np.quantile(per_jet, 0.99):.1e}, "
        f"{int(some.sum())} of {len(some)} jets with non-zero relevance)"
    )
    print(f"  float64 (same rule, exact forward):   {rel_diff(rel64, cap64):.2e}")
    print(f"  float32 vs float64: hepaudit {rel_diff(rel, rel64):.2e}, captum {rel_diff(cap, cap64):.2e}")


if __name__ == "__main__":
    main()
