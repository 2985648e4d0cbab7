"""LRP-ε throughput: hepaudit's numpy backward engine against captum's LRP and onnxruntime.

Targets (issue 4), over 100k TopoDNN jets on the same CPU in one run:
  * hepaudit LRP-ε (onnxruntime forward with the hidden tensors exposed + numpy backward)
    at least as fast as captum.attr.LRP on the equivalent PyTorch model (built here from
    the ONNX weights);
  * at most 4 × the time of one plain onnxruntime forward pass over the same jets.
Also checks that both give the same relevance (captum's LRP-ε on Linear layers is the same
rule). Uses examples/models/topodnn.onnx when present, otherwise a TopoDNN-shaped
(90-300-102-12-6-1) ReLU MLP with random weights, and says which.

    python benchmarks/bench_lrp.py [--jets 100000] [--chunk 10000]

Needs torch and captum (benchmark only): pip install captum
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import EXAMPLE_MODEL, machine  # noqa: E402

from hepaudit.model.backward import BackwardEngine, RuleSet, ScoreTarget  # noqa: E402
from hepaudit.model.graph import find_head  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jets", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    args = parser.parse_args()
    import torch
    from captum.attr import LRP

    model, what = topodnn_model()
    head = find_head(model, model.graph.output[0].name)
    assert head is not None
    x = np.random.default_rng(0).uniform(0, 0.5, (args.jets, 90)).astype(np.float32)
    chunks = [x[i : i + args.chunk] for i in range(0, len(x), args.chunk)]
    threads = 2
    torch.set_num_threads(threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    plain = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    name = plain.get_inputs()[0].name
    out_name = plain.get_outputs()[0].name

    engine = BackwardEngine(model, ScoreTarget(head.logit, head.op), dtype=np.float32)  # as the explainer
    from hepaudit.model.graph import with_extra_outputs

    exposed = ort.InferenceSession(
        with_extra_outputs(model, engine.needed).SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    rules = RuleSet("epsilon", epsilon=1e-6)

    def run_plain() -> float:
        t0 = time.perf_counter()
        for c in chunks:
            plain.run([out_name], {name: c})
        return time.perf_counter() - t0

    def run_hepaudit() -> tuple[float, float, np.ndarray]:
        fwd = bwd = 0.0
        first = None
        for c in chunks:
            t0 = time.perf_counter()
            vals = dict(zip(engine.needed, exposed.run(engine.needed, {name: c})))
            vals[name] = c
            t1 = time.perf_counter()
            rel = engine.relevance(vals, rules).relevance[name]
            bwd += time.perf_counter() - t1
            fwd += t1 - t0
            first = rel if first is None else first
        return fwd, bwd, first

    layers = dense_layers(model)
    mods: list[torch.nn.Module] = []
    for i, (w, b) in enumerate(layers):
        lin = torch.nn.Linear(w.shape[0], w.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w.T.copy()))
            lin.bias.copy_(torch.from_numpy(np.array(b)))
        mods.append(lin)
        if i < len(layers) - 1:
            mods.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*mods).eval()  # the logit: captum seeds LRP with the output (R = z)
    lrp = LRP(net)
    from captum.attr._utils.lrp_rules import EpsilonRule

    for m in net:
        if isinstance(m, torch.nn.Linear):
            m.rule = EpsilonRule(epsilon=1e-6)

    def run_captum() -> tuple[float, np.ndarray]:
        t0 = time.perf_counter()
        first = None
        for c in chunks:
            a = lrp.attribute(torch.from_numpy(c), target=0).detach().numpy()
            first = a if first is None else first
        return time.perf_counter() - t0, first

    run_plain(), run_hepaudit()  # warm up sessions and caches
    t_plain = min(run_plain() for _ in range(3))
    best = min((run_hepaudit() for _ in range(3)), key=lambda r: r[0] + r[1])
    t_fwd, t_bwd, rel = best
    t_captum, cap = min((run_captum() for _ in range(2)), key=lambda r: r[0])
    t_total = t_fwd + t_bwd
    agree = float(np.max(np.abs(rel - cap)) / np.max(np.abs(cap)))

    print(f"machine: {machine()}")
    print(f"model: {what}")
    print(f"jets: {args.jets}, chunk {args.chunk}, threads {threads}; rule LRP-epsilon, epsilon = 1e-6")
    print(f"onnxruntime plain forward:           {t_plain:8.3f} s  ({args.jets / t_plain:,.0f} jets/s)")
    print(f"hepaudit LRP: exposed forward        {t_fwd:8.3f} s")
    print(f"hepaudit LRP: numpy backward         {t_bwd:8.3f} s")
    print(f"hepaudit LRP total:                  {t_total:8.3f} s  ({args.jets / t_total:,.0f} jets/s)")
    print(
        f"captum LRP (torch {torch.__version__}):     {t_captum:8.3f} s  ({args.jets / t_captum:,.0f} jets/s)"
    )
    print(
        f"ratio hepaudit / onnxruntime forward: {t_total / t_plain:6.2f}  (target <= 4; backward alone "
        f"{t_bwd / t_plain:.2f})"
    )
    print(f"ratio captum / hepaudit (speed-up):   {t_captum / t_total:6.2f}  (target >= 1)")
    print(f"max |R_hepaudit - R_captum| / max |R_captum| on the first chunk: {agree:.2e}")


if __name__ == "__main__":
    main()
