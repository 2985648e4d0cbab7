"""NAP on TopoDNN: the cost of RNA accumulation against one plain onnxruntime pass.

The target (issue 6): NAP over 200k TopoDNN jets <= 2 x the time of one plain onnxruntime
pass over the same jets. Both are measured in this one run on the same prebuilt inputs
(reading ROOT and building inputs is shared by every explainer and timed separately):

* plain: ``InferenceSession.run`` of the unmodified model, score output only;
* NAP: hepaudit's Tagger with the hidden layers exposed as extra outputs, plus the nap
  explainer's ``update`` on every chunk and its ``finish`` (RNA, sparsity; no figure).

A full ``hepaudit.audit`` with ``[explainers.nap]`` is also timed, for the end-to-end picture.
Uses examples/models/topodnn.onnx when present, else a TopoDNN-shaped random MLP
(90-300-102-12-6-1, ReLU, Sigmoid), and says which.

    python benchmarks/bench_nap.py [--jets 200000] [--step 100000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EXAMPLE_MODEL, machine, random_topodnn, repeated_sample, topodnn_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jets", type=int, default=200_000)
    parser.add_argument("--step", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions; the best is reported")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "hepaudit-bench")
    args = parser.parse_args()

    import hepaudit
    from hepaudit.config import load_config
    from hepaudit.data.builders import InputBuilder
    from hepaudit.data.reading import Sample
    from hepaudit.explainers.base import AuditContext, Chunk
    from hepaudit.explainers.nap import NapOptions, NeuralActivationPatterns
    from hepaudit.model.session import Tagger
    from hepaudit.plugins import PluginHost

    print(f"machine: {machine()}")
    print(f"onnxruntime {ort.__version__}, numpy {np.__version__}")
    folder = args.workdir / f"speed_{args.jets}"
    folder.mkdir(parents=True, exist_ok=True)
    if EXAMPLE_MODEL.exists():
        model, what = EXAMPLE_MODEL, f"example model {EXAMPLE_MODEL.name}"
    else:
        model = random_topodnn(folder / "topodnn_random.onnx")
        what = "TopoDNN-shaped random MLP 90-300-102-12-6-1 (examples/models/topodnn.onnx is absent)"
    print(f"model: {what}")
    files = repeated_sample(args.jets, folder)
    config = folder / "nap.toml"
    config.write_text(
        topodnn_config(model, files, step=args.step,
                       extra="[execution]\nprogress = false\n[explainers.nap]\nfigure = false")
    )

    cfg = load_config(config)
    tagger = Tagger(cfg.model)
    builder = InputBuilder(cfg.inputs, PluginHost().recipes().recipes, tagger.info.inputs)
    sample = Sample(cfg.data)
    sample.check(["is_signal"], builder.jagged_branches)
    t0 = time.perf_counter()
    chunks = []
    for raw in sample.chunks(builder.branches + ["is_signal"]):
        chunks.append(
            (raw.entries, builder.build(raw.arrays), np.asarray(raw.arrays["is_signal"]).astype(np.int8))
        )
    build_s = time.perf_counter() - t0
    n_jets = sum(len(c[0]) for c in chunks)

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    batch = cfg.model.batch_size

    def plain() -> float:
        t = time.perf_counter()
        for _, inputs, _ in chunks:
            x = inputs["x"]
            for start in range(0, len(x), batch):
                session.run(["score"], {"x": x[start : start + batch]})
        return time.perf_counter() - t

    context = AuditContext(tagger=tagger, builder=builder, features=builder.features, groups={})
    nap = NeuralActivationPatterns(NapOptions(figure=False), context)  # exposes the hidden layers

    def with_nap() -> tuple[float, float]:
        t = time.perf_counter()
        state = nap.start()
        inference = 0.0
        for entries, inputs, labels in chunks:
            ti = time.perf_counter()
            out = tagger.run(inputs)
            inference += time.perf_counter() - ti
            chunk = Chunk(entries, inputs, out.score, out.logit, context, labels, extra=out.extra)
            state = nap.update(state, chunk)
        result = nap.finish(state)
        with_nap.result = result  # type: ignore[attr-defined]
        return time.perf_counter() - t, inference

    plain()  # warm-up: thread pools, first-touch allocations
    with_nap()
    # interleaved, best of each: the machine is shared, so both see the same background load
    plain_times, nap_runs = [], []
    for _ in range(args.repeats):
        plain_times.append(plain())
        nap_runs.append(with_nap())
    plain_s = min(plain_times)
    nap_s, nap_inference_s = min(nap_runs)
    result = with_nap.result  # type: ignore[attr-defined]

    t0 = time.perf_counter()
    report = hepaudit.audit(config, out=None, progress=False, keep_per_jet=False, warn=False)
    audit_s = time.perf_counter() - t0

    print(
        f"jets: {n_jets} in {len(chunks)} chunks; hidden layers: "
        + ", ".join(f"{la['name']}({la['nodes']})" for la in result.fields["layers"])
    )
    print(f"reading + building inputs (shared by all explainers, not in either time): {build_s:8.2f} s")
    print(f"plain onnxruntime pass, score only:                 {plain_s:8.3f} s")
    print(
        f"NAP: run with hidden outputs + update + finish:     {nap_s:8.3f} s "
        f"(of which onnxruntime with extra outputs {nap_inference_s:.3f} s)"
    )
    print(f"RATIO NAP / plain onnxruntime = {nap_s / plain_s:.3f}   (target <= 2)")
    print(
        f"full audit with [explainers.nap] (read, build, score, NAP, no files): {audit_s:.2f} s; "
        f"its onnxruntime time {report.timing['inference_s']:.2f} s, nap {report.timing.get('nap_s', 0):.2f} s"
    )
    print(
        f"overall sparsity {result.fields['sparsity']:.3f} (signal {result.fields['sparsity_signal']:.3f}, "
        f"background {result.fields['sparsity_background']:.3f}); per layer "
        + ", ".join(f"{la['sparsity']:.2f}" for la in result.fields["layers"])
    )


if __name__ == "__main__":
    main()
