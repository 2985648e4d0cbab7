"""Every public collaboration tagger in ../shared/external-models, every explainer (issue 18).

Per model (tests/taggers.py: the model, its config, the sample of real jets with synthetic
detector variables): the audit runs dauc, mad, shap, nap, lrp and gradient with status ok;
the gradient of the score's logit agrees with central finite differences of the logit
computed by onnxruntime (on a float64 copy of the graph where onnxruntime runs it, Conv
models in float32 with a larger step); LRP-ε conserves relevance (Σ R + bias shares = z);
NAP on the interaction network sums a jet's activity over all of its edges, as a direct run
of the graph on that jet alone gives. Skipped when the folder is absent.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import uproot

sys.path.insert(0, str(Path(__file__).parent))

from builders import toml_dumps  # noqa: E402
from taggers import (  # noqa: E402
    CASES,
    EXTERNAL,
    FLOAT32_ONLY,
    TaggerCase,
    float64_copy,
    frozen_neighbours,
    write_sample,
)

from hepaudit import audit  # noqa: E402
from hepaudit.config import load_config  # noqa: E402
from hepaudit.data.builders import InputBuilder  # noqa: E402
from hepaudit.model.backward import (  # noqa: E402
    BackwardEngine,
    RuleSet,
    ScoreTarget,
    gradient_seed,
    logit_and_gradient,
)
from hepaudit.model.backward.blocked import BlockedBackward  # noqa: E402
from hepaudit.model.graph import with_extra_outputs  # noqa: E402
from hepaudit.model.session import Tagger  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not EXTERNAL.exists(), reason="../shared/external-models is absent")]
NAMES = [c.name for c in CASES]
EXPLAINERS = ["dauc", "mad", "shap", "nap", "lrp", "gradient"]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample(tmp_path_factory.mktemp("taggers") / "jets.root")


def _case(name: str) -> TaggerCase:
    case = next(c for c in CASES if c.name == name)
    if not case.available():
        pytest.skip(f"{case.file} is absent")
    return case


def _explainer_tables(case: TaggerCase) -> dict[str, Any]:
    grouped = case.name != "hls4ml_mlp"  # thousands of features: occlude variables, not each feature
    occlusion = {"features": False, "groups": ["feature"]} if grouped else {}
    return {"dauc": occlusion, "mad": occlusion, "shap": ({"groups": "feature"} if grouped else {}) | {
        "jets": 2, "samples": 64}, "nap": {}, "lrp": {},
            "gradient": {"per_jet": True}}


def _setup(case: TaggerCase, sample: Path, folder: Path, explainers: dict[str, Any]) -> Path:
    path = folder / f"{case.name}.toml"
    path.write_text(toml_dumps(case.config(sample, explainers)))
    return path


@pytest.mark.parametrize("name", NAMES)
def test_every_explainer_runs(name: str, sample: Path, tmp_path: Path) -> None:
    case = _case(name)
    config = _setup(case, sample, tmp_path, _explainer_tables(case))
    report = audit(config, out=tmp_path / "out")
    status = {k: (r.status, r.error) for k, r in report.explainers.items()}
    assert all(s == "ok" for s, _ in status.values()), status
    # per-jet relevance and gradients for every feature, as array branches of per_jet.root
    with uproot.open(tmp_path / "out" / "per_jet.root") as f:
        keys = set(f["hepaudit"].keys())
    assert any(k.startswith("lrp") for k in keys) and any(k.startswith("grad") for k in keys)


def _jets(case: TaggerCase, sample: Path, folder: Path) -> tuple[Tagger, dict[str, np.ndarray], list[str]]:
    cfg = load_config(_setup(case, sample, folder, {"dauc": {}}))
    tagger = Tagger(cfg.model)
    builder = InputBuilder(cfg.inputs, {}, tagger.info.inputs)
    with uproot.open(sample) as f:
        arrays = f["jets"].arrays(builder.branches)
    inputs = {k: v[[0, 5]] for k, v in builder.build(arrays).items()}  # a signal and a background jet
    masks = [c.name for c in cfg.inputs if c.kind == "mask" or (c.kind == "cms" and builder.cms[c.name].is_mask)]
    return tagger, inputs, masks


def _logit_function(tagger: Tagger, target: ScoreTarget, float64: bool,
                    frozen: dict[str, np.ndarray] | None = None, proto: Any = None) -> Any:
    """z(x) per jet from onnxruntime (the seed tensor the engine starts from); ``frozen``: the
    neighbour indices fed to a graph whose TopKs were cut (``frozen_neighbours``)."""
    proto = with_extra_outputs(proto if proto is not None else tagger.proto, [target.tensor])
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession((float64_copy(proto) if float64 else proto).SerializeToString(),
                                   sess_options=opts, providers=["CPUExecutionProvider"])
    dtype = np.float64 if float64 else np.float32

    def logit(feed: dict[str, np.ndarray]) -> np.ndarray:
        n = len(next(iter(feed.values())))
        padded = tagger.padded_feed({k: v.astype(dtype) for k, v in feed.items()})
        values = session.run([target.tensor], {**padded, **(frozen or {})})
        return logit_and_gradient(target, values[0].astype(np.float64))[0][:n]
    return logit


def _runs_in_float64(tagger: Tagger) -> bool:
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        ort.InferenceSession(float64_copy(tagger.proto).SerializeToString(), sess_options=opts,
                             providers=["CPUExecutionProvider"])
        return True
    except Exception:
        return False


def _float64_values(tagger: Tagger, engine: BackwardEngine, graph: Any, inputs: dict[str, np.ndarray],
                    frozen: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """The forward values the engine reads, from onnxruntime on the float64 copy (None if it cannot)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    try:
        session = ort.InferenceSession(float64_copy(with_extra_outputs(graph, engine.needed)).SerializeToString(),
                                       sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime has no float64 kernel for an op (DeepAK8's 3-wide Conv)
        return None
    feed = {k: v.astype(np.float64) for k, v in tagger.padded_feed(inputs).items()}
    values = dict(zip(engine.needed, session.run(engine.needed, {**feed, **frozen})))
    values.update(feed)
    return values


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_finite_differences(name: str, sample: Path, tmp_path: Path) -> None:
    """The engine's gradient is the derivative of the function onnxruntime computes. In float64
    (the graph's float64 copy, for both the forward values and the differences) they agree to
    1e-5; DeepAK8, whose Conv onnxruntime has in float32 only, is checked in float32 with a
    larger step. ParticleNet's k nearest neighbours are held fixed (``frozen_neighbours``)."""
    case = _case(name)
    tagger, inputs, masks = _jets(case, sample, tmp_path)
    engine = BackwardEngine(tagger.proto, ScoreTarget.from_score_spec(tagger.score_spec),
                            inputs=[i.name for i in tagger.info.inputs], dtype=np.float64)
    grads, z = BlockedBackward(tagger, engine).gradient(inputs)  # as the audit runs it
    cut, frozen = frozen_neighbours(tagger.proto, tagger.padded_feed(inputs))
    values = _float64_values(tagger, engine, cut, inputs, frozen)
    float64 = values is not None
    logit = _logit_function(tagger, engine.target, float64, frozen, cut)
    np.testing.assert_allclose(logit(inputs), z, rtol=1e-3, atol=1e-3)
    if values is not None:  # the engine on float64 forward values: the exact derivative
        g64 = engine.gradient(values, gradient_seed(engine.target, values[engine.target.tensor]))
        grads = {k: g[:len(z)] for k, g in g64.items()}
    islands = any(n.op_type in FLOAT32_ONLY for n in tagger.proto.graph.node)
    # the step: small enough that few ReLU kinks lie within ±h (these networks' slopes reach 1e4 on
    # synthetic inputs), large enough for the rounding (float64: 1e-16; an op run in float32: 1e-7)
    if not float64:
        h, rtol, atol = 1e-3, 3e-2, 3e-2
    elif islands and case.fd_step:  # float32 rounding over a small step: a wider absolute margin
        h, rtol, atol = case.fd_step, 2e-2, 5e-2
    elif islands:
        h, rtol, atol = 3e-4, 1e-2, 5e-3
    else:
        h, rtol, atol = 1e-8, 1e-5, 1e-6
    rng = np.random.default_rng(11)
    for name_in, x_in in inputs.items():
        if name_in in masks:
            continue
        real = np.flatnonzero(x_in)  # padding left alone
        agree = 0
        for _ in range(5):  # a direction along 8 entries of this input: few ReLU kinks in [x - hv, x + hv]
            v = {k: np.zeros(x.shape) for k, x in inputs.items()}
            picked = rng.choice(real, min(8, len(real)), replace=False)
            v[name_in].reshape(-1)[picked] = rng.normal(size=len(picked))
            analytic = (grads[name_in] * v[name_in]).reshape(len(z), -1).sum(axis=1)
            for step in (h, h / 4):  # a kink inside ±h is rarely inside ±h/4 as well
                fd = (logit({k: x + step * v[k] for k, x in inputs.items()})
                      - logit({k: x - step * v[k] for k, x in inputs.items()})) / (2 * step)
                if np.all(np.abs(fd - analytic) <= rtol * (np.abs(fd) + np.abs(analytic)) + atol):
                    agree += 1
                    break
        # a kink (ReLU, Max, a clamp) on the segment can still spoil a direction: most must agree
        assert agree >= 3, (name, name_in, fd, analytic)


@pytest.mark.parametrize("name", NAMES)
def test_lrp_conserves_relevance(name: str, sample: Path, tmp_path: Path) -> None:
    """LRP-ε (ε = 1e-9, float64): Σ_i R_i + the biases' shares = z(x) per jet, every model."""
    case = _case(name)
    tagger, inputs, _ = _jets(case, sample, tmp_path)
    engine = BackwardEngine(tagger.proto, ScoreTarget.from_score_spec(tagger.score_spec),
                            inputs=[i.name for i in tagger.info.inputs], dtype=np.float64)
    out = BlockedBackward(tagger, engine).relevance(inputs, RuleSet("epsilon", epsilon=1e-9))
    residual = out.total() + out.absorbed_bias - out.seed_total
    if case.name == "robust_part_ak4":
        # its transformer holds tensors sequence-first, (tokens, jets, C): what constants absorb there
        # cannot be told per jet and is spread evenly, so only the sum over jets is conserved exactly
        residual = np.array([residual.sum()])
    assert np.all(np.abs(residual) <= 1e-4 * (1 + np.abs(out.seed_total).sum())), (name, residual, out.seed_total)


def test_interaction_network_nap_counts_every_edge(sample: Path, tmp_path: Path) -> None:
    """Hidden tensors of (jets × edges, C) come back per jet with all edges; NAP's sums are a
    direct onnxruntime run of the graph on each jet alone, summed over that jet's edges."""
    case = _case("interaction_net")
    config = _setup(case, sample, tmp_path, {"nap": {}})
    report = audit(config, out=tmp_path / "out")
    nap = report.explainers["nap"]
    assert nap.status == "ok", nap.error
    tagger, _, _ = _jets(case, sample, tmp_path)
    cfg = load_config(config)
    builder = InputBuilder(cfg.inputs, {}, tagger.info.inputs)
    with uproot.open(sample) as f:
        arrays = f["jets"].arrays(builder.branches + ["is_signal"])
    inputs = builder.build(arrays)
    labels = np.asarray(arrays["is_signal"])
    layers = nap.fields["layers"]
    assert len(layers) == 9
    names = [row["name"] for row in layers]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(with_extra_outputs(tagger.proto, names).SerializeToString(), sess_options=opts,
                                   providers=["CPUExecutionProvider"])
    sums = {n: np.zeros((2, 0)) for n in names}
    for j in range(len(labels)):
        values = session.run(names, {k: v[j:j + 1] for k, v in inputs.items()})
        for n, value in zip(names, values):
            per_channel = value.reshape(-1, value.shape[-1]).astype(np.float64).sum(axis=0)
            if sums[n].shape[1] == 0:
                sums[n] = np.zeros((2, len(per_channel)))
            sums[n][labels[j]] += per_channel
    edge_layers = 0
    for row in layers:
        s = sums[row["name"]]
        edge_layers += int(s.shape[1] > 0 and row["nodes"] == s.shape[1])
        for cls, key in ((1, "rna_signal"), (0, "rna_background")):
            top = s[cls].max()
            want = s[cls] / top if top > 0 else np.zeros_like(s[cls])
            np.testing.assert_allclose(row[key], want, rtol=1e-4, atol=1e-6, err_msg=row["name"])
    assert edge_layers == len(layers)
    (tmp_path / "nap.json").write_text(json.dumps(layers[:1]))
