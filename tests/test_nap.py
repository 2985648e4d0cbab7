"""NAP / RNA: layer discovery, RNA and sparsity against a direct computation, masks, CLI.

The reference numbers never come from hepaudit's expose mechanism: every test cuts the
graph down to its hidden tensors with ``onnx.utils.Extractor`` (or by editing its outputs),
runs that copy with its own onnxruntime session, and computes RNA and sparsity with numpy
from the definition in docs/methods.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import uproot
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))

from builders import dense_weights, make_jets, mlp_hidden, mlp_model, save, toml_dumps, write_jets  # noqa: E402

import hepaudit  # noqa: E402
from hepaudit.config import ModelConfig  # noqa: E402
from hepaudit.data.builders import InputBuilder  # noqa: E402
from hepaudit.explainers.base import AuditContext, Chunk  # noqa: E402
from hepaudit.explainers.nap import NapOptions, NeuralActivationPatterns  # noqa: E402
from hepaudit.model.graph import find_head  # noqa: E402
from hepaudit.model.layers import find_hidden_layers, per_jet_channels  # noqa: E402
from hepaudit.model.session import Tagger  # noqa: E402
from hepaudit.plugins import PluginHost  # noqa: E402

OPSET = 13
N_JETS = 1200
DEEPAK8 = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "external-models"
    / "cms-DeepBoostedJet-V02-full"
    / "resnet.onnx"
)

TOPODNN_INPUT = {
    "name": "x",
    "kind": "constituents",
    "momentum": {"px": "part_px", "py": "part_py", "pz": "part_pz", "energy": "part_energy"},
    "features": ["pt", "eta", "phi"],
    "max_particles": 30,
    "preprocess": "topodnn",
}


# -- helpers ------------------------------------------------------------------------------------


def truncated_run(
    model: onnx.ModelProto, inputs: dict[str, np.ndarray], outputs: list[str]
) -> dict[str, np.ndarray]:
    """Run a copy of the graph cut down to ``outputs`` in its own onnxruntime session."""
    inferred = onnx.shape_inference.infer_shapes(model)
    sub = onnx.utils.Extractor(inferred).extract_model(list(inputs), outputs)
    session = ort.InferenceSession(sub.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(outputs, session.run(outputs, inputs)))


def rna_by_definition(per_jet: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RNA per class straight from docs/methods.md: Σ_i a_j / max_j Σ_i a_j."""
    sig = per_jet[labels == 1].sum(axis=0)
    bkg = per_jet[labels == 0].sum(axis=0)
    return sig / sig.max(), bkg / bkg.max()


def built_inputs(folder: Path, config: dict) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The model inputs and labels of every jet in the folder's jets.root (hepaudit's builder:
    it is the input under audit, not the quantity under test)."""
    from hepaudit.config import load_config

    cfg = load_config(folder / "audit.toml")
    tagger = Tagger(cfg.model)
    builder = InputBuilder(cfg.inputs, PluginHost().recipes().recipes, tagger.info.inputs)
    with uproot.open(folder / "jets.root") as f:
        arrays = f["jets"].arrays(builder.branches + ["is_signal"])
    return builder.build(arrays), np.asarray(arrays["is_signal"])


def write_audit(
    folder: Path,
    model: onnx.ModelProto,
    inputs: list[dict],
    explainers: dict,
    score: int | None = None,
    jets: dict | None = None,
) -> Path:
    save(model, folder / "m.onnx")
    write_jets(folder / "jets.root", jets if jets is not None else make_jets(N_JETS, seed=3))
    doc: dict[str, object] = {
        "model": {"path": "m.onnx", **({"score": score} if score is not None else {})},
        "data": {"files": ["jets.root"], "label": "is_signal", "step_size": 500},
        "inputs": inputs,
        "execution": {"progress": False},
        "explainers": {},
    }
    text = toml_dumps(doc).replace("[explainers]\n", "")
    for name, table in explainers.items():
        text += f"\n[explainers.{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
    (folder / "audit.toml").write_text(text)
    return folder / "audit.toml"


def deep_set_model(
    n_particles: int, n_features: int = 3, phi: int = 6, f: int = 5, seed: int = 0
) -> onnx.ModelProto:
    """A PFN-like deep set: Φ = Relu(x W1 + b1) per particle with b1 > 0 (so padded particles
    have non-zero activations), masked sum over particles, F = Relu(W2 ·) and a softmax head."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 1, (n_features, phi)).astype(np.float32)
    b1 = rng.uniform(0.2, 1.0, phi).astype(np.float32)
    w2 = rng.normal(0, 0.3, (phi, f)).astype(np.float32)
    b2 = rng.normal(0, 0.1, f).astype(np.float32)
    w3 = rng.normal(0, 1, (f, 2)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["features", "W1"], ["phi_mm"]),
        helper.make_node("Add", ["phi_mm", "b1"], ["phi_pre"]),
        helper.make_node("Relu", ["phi_pre"], ["phi_act"]),
        helper.make_node("Unsqueeze", ["mask", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["phi_act", "mask3"], ["phi_masked"]),
        helper.make_node("ReduceSum", ["phi_masked", "axis1"], ["latent"], keepdims=0),
        helper.make_node("MatMul", ["latent", "W2"], ["f_mm"]),
        helper.make_node("Add", ["f_mm", "b2"], ["f_pre"]),
        helper.make_node("Relu", ["f_pre"], ["f_act"]),
        helper.make_node("MatMul", ["f_act", "W3"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=-1),
    ]
    inits = [
        numpy_helper.from_array(a, n) for a, n in ((w1, "W1"), (b1, "b1"), (w2, "W2"), (b2, "b2"), (w3, "W3"))
    ]
    inits += [
        numpy_helper.from_array(np.array([2], np.int64), "axis2"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]
    graph = helper.make_graph(
        nodes,
        "deepset",
        [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", n_particles, n_features]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", n_particles]),
        ],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    return model


DEEP_SET_INPUTS = [
    {
        "name": "features",
        "kind": "constituents",
        "layout": "particles",
        "max_particles": 50,
        "momentum": {"px": "part_px", "py": "part_py", "pz": "part_pz", "energy": "part_energy"},
        "features": ["pt_rel", "deta", "dphi"],
    },
    {"name": "mask", "kind": "mask", "of": "features"},
]


def conv_model(channels_in: int, positions: int, channels: int = 4, seed: int = 0) -> onnx.ModelProto:
    """Conv1D (kernel 1) + BatchNormalization + Relu, global average pool, Gemm + Relu, Sigmoid."""
    rng = np.random.default_rng(seed)
    wc = rng.normal(0, 1, (channels, channels_in, 1)).astype(np.float32)
    bc = rng.normal(0, 0.2, channels).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, channels).astype(np.float32)
    shift = rng.normal(0, 0.2, channels).astype(np.float32)
    mean = rng.normal(0, 0.1, channels).astype(np.float32)
    var = rng.uniform(0.5, 2.0, channels).astype(np.float32)
    wd = rng.normal(0, 1, (3, channels)).astype(np.float32)
    bd = rng.normal(0, 0.1, 3).astype(np.float32)
    wo = rng.normal(0, 1, (1, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "Wc", "bc"], ["conv"], kernel_shape=[1]),
        helper.make_node("BatchNormalization", ["conv", "scale", "shift", "mean", "var"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["conv_act"]),
        helper.make_node("GlobalAveragePool", ["conv_act"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "Wd", "bd"], ["dense"], transB=1),
        helper.make_node("Relu", ["dense"], ["dense_act"]),
        helper.make_node("Tanh", ["dense"], ["unused_branch"]),  # off the score path: not a layer
        helper.make_node("Gemm", ["dense_act", "Wo"], ["logit"], transB=1),
        helper.make_node("Sigmoid", ["logit"], ["score"]),
    ]
    inits = [
        numpy_helper.from_array(a, n)
        for a, n in (
            (wc, "Wc"),
            (bc, "bc"),
            (scale, "scale"),
            (shift, "shift"),
            (mean, "mean"),
            (var, "var"),
            (wd, "Wd"),
            (bd, "bd"),
            (wo, "Wo"),
        )
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels_in, positions])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    return model


# -- tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["gemm", "matmul"])
def test_rna_and_sparsity_match_truncated_graph(tmp_path: Path, style: str) -> None:
    weights = dense_weights([90, 24, 10, 6, 1], seed=7)
    model = mlp_model(weights, style)
    config = write_audit(tmp_path, model, [TOPODNN_INPUT], {"nap": {}})
    report = hepaudit.audit(config, out=None, progress=False)
    result = report.explainers["nap"]
    assert result.status == "ok", result.error
    layers = result.fields["layers"]
    assert [la["name"] for la in layers] == ["h0", "h1", "h2"]  # the score's Sigmoid is not a layer

    inputs, labels = built_inputs(tmp_path, {})
    hidden = truncated_run(model, inputs, ["h0", "h1", "h2"])
    # the truncated graph agrees with an independent numpy forward pass of the same weights
    for ort_h, np_h in zip(hidden.values(), mlp_hidden(weights, inputs["x"])):
        np.testing.assert_allclose(ort_h, np_h, rtol=1e-4, atol=1e-5)
    pooled_sig, pooled_bkg, pooled_both = [], [], []
    for layer, (_name, act) in zip(layers, hidden.items()):
        sig, bkg = rna_by_definition(act.astype(np.float64), labels)
        np.testing.assert_allclose(layer["rna_signal"], sig, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(layer["rna_background"], bkg, rtol=1e-6, atol=1e-9)
        assert layer["nodes"] == act.shape[1]
        assert layer["sparsity_signal"] == pytest.approx(np.mean(sig < 0.2))
        assert layer["sparsity_background"] == pytest.approx(np.mean(bkg < 0.2))
        assert layer["sparsity"] == pytest.approx(np.mean(np.maximum(sig, bkg) < 0.2))
        never = (act[labels == 1].sum(0) == 0) & (act[labels == 0].sum(0) == 0)
        assert layer["dead_nodes"] == np.flatnonzero(never).tolist()
        pooled_sig.append(sig < 0.2)
        pooled_bkg.append(bkg < 0.2)
        pooled_both.append(np.maximum(sig, bkg) < 0.2)
    assert result.fields["threshold"] == 0.2
    assert result.fields["sparsity"] == pytest.approx(np.mean(np.concatenate(pooled_both)))
    assert result.fields["sparsity_signal"] == pytest.approx(np.mean(np.concatenate(pooled_sig)))
    assert result.fields["sparsity_background"] == pytest.approx(np.mean(np.concatenate(pooled_bkg)))
    assert result.fields["jets"] == {"signal": int(labels.sum()), "background": int((labels == 0).sum())}


def test_threshold_option_changes_sparsity(tmp_path: Path) -> None:
    weights = dense_weights([90, 40, 1], seed=2)
    model = mlp_model(weights, "gemm")
    config = write_audit(tmp_path, model, [TOPODNN_INPUT], {"nap": {"threshold": 0.5, "figure": False}})
    result = hepaudit.audit(config, out=None, progress=False).explainers["nap"]
    inputs, labels = built_inputs(tmp_path, {})
    act = truncated_run(model, inputs, ["h0"])["h0"].astype(np.float64)
    sig, bkg = rna_by_definition(act, labels)
    assert result.fields["threshold"] == 0.5
    assert result.fields["sparsity"] == pytest.approx(np.mean(np.maximum(sig, bkg) < 0.5))
    assert result.fields["sparsity"] != pytest.approx(np.mean(np.maximum(sig, bkg) < 0.2))
    assert result.figures == []


def test_deep_set_sums_respect_the_mask(tmp_path: Path) -> None:
    model = deep_set_model(50)
    config = write_audit(tmp_path, model, DEEP_SET_INPUTS, {"nap": {}}, score=1)
    result = hepaudit.audit(config, out=None, progress=False).explainers["nap"]
    assert result.status == "ok", result.error
    layers = {la["name"]: la for la in result.fields["layers"]}
    assert list(layers) == ["phi_act", "f_act"]
    assert layers["phi_act"]["channel_axis"] == -1

    inputs, labels = built_inputs(tmp_path, {})
    acts = truncated_run(model, inputs, ["phi_act", "f_act"])
    mask = inputs["mask"]
    padded = mask == 0
    assert padded.any() and (acts["phi_act"][padded] > 0).any()  # padding really does activate
    masked = np.einsum("np,npc->nc", mask.astype(np.float64), acts["phi_act"].astype(np.float64))
    sig, bkg = rna_by_definition(masked, labels)
    np.testing.assert_allclose(layers["phi_act"]["rna_signal"], sig, rtol=1e-6)
    np.testing.assert_allclose(layers["phi_act"]["rna_background"], bkg, rtol=1e-6)
    unmasked_sig, _ = rna_by_definition(acts["phi_act"].sum(axis=1).astype(np.float64), labels)
    assert not np.allclose(unmasked_sig, sig, rtol=1e-3)  # the mask matters for this network
    sig_f, bkg_f = rna_by_definition(acts["f_act"].astype(np.float64), labels)
    np.testing.assert_allclose(layers["f_act"]["rna_signal"], sig_f, rtol=1e-6)
    np.testing.assert_allclose(layers["f_act"]["rna_background"], bkg_f, rtol=1e-6)


def test_conv_channels_first_and_off_path_activations(tmp_path: Path) -> None:
    model = conv_model(3, 30)
    head = find_head(model, "score")
    found = find_hidden_layers(model, "score", head)
    assert [(la.name, la.channel_axis) for la in found] == [("conv_act", 1), ("dense_act", -1)]
    inputs = [
        {
            "name": "x",
            "kind": "constituents",
            "layout": "channels",
            "max_particles": 30,
            "momentum": {"px": "part_px", "py": "part_py", "pz": "part_pz", "energy": "part_energy"},
            "features": ["pt_rel", "deta", "dphi"],
        }
    ]
    config = write_audit(tmp_path, model, inputs, {"nap": {}})
    result = hepaudit.audit(config, out=None, progress=False).explainers["nap"]
    assert result.status == "ok", result.error
    layers = {la["name"]: la for la in result.fields["layers"]}
    built, labels = built_inputs(tmp_path, {})
    acts = truncated_run(model, built, ["conv_act", "dense_act"])
    sig, bkg = rna_by_definition(
        acts["conv_act"].sum(axis=2).astype(np.float64), labels
    )  # channels on axis 1
    assert layers["conv_act"]["nodes"] == 4
    np.testing.assert_allclose(layers["conv_act"]["rna_signal"], sig, rtol=1e-6)
    np.testing.assert_allclose(layers["conv_act"]["rna_background"], bkg, rtol=1e-6)


def test_channel_axis_option_and_unknown_layer(tmp_path: Path) -> None:
    model = conv_model(3, 30)
    inputs = [
        {
            "name": "x",
            "kind": "constituents",
            "layout": "channels",
            "max_particles": 30,
            "momentum": {"px": "part_px", "py": "part_py", "pz": "part_pz", "energy": "part_energy"},
            "features": ["pt_rel", "deta", "dphi"],
        }
    ]
    config = write_audit(tmp_path, model, inputs, {"nap": {"layers": ["conv_act"], "channel_axis": 2}})
    result = hepaudit.audit(config, out=None, progress=False).explainers["nap"]
    (layer,) = result.fields["layers"]
    assert layer["nodes"] == 30 and layer["channel_axis"] == 2  # positions as nodes, as asked
    built, labels = built_inputs(tmp_path, {})
    act = truncated_run(model, built, ["conv_act"])["conv_act"]
    sig, _ = rna_by_definition(act.sum(axis=1).astype(np.float64), labels)
    np.testing.assert_allclose(layer["rna_signal"], sig, rtol=1e-6)

    bad = write_audit(tmp_path, model, inputs, {"nap": {"layers": ["no_such_tensor"]}})
    proc = subprocess.run(
        [sys.executable, "-m", "hepaudit.cli", "audit", str(bad), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "no_such_tensor" in proc.stderr


def test_never_active_layer_is_a_finding(tmp_path: Path) -> None:
    weights = dense_weights([90, 12, 5, 1], seed=4)
    w1, b1 = weights[1]
    weights[1] = (np.zeros_like(w1), np.full_like(b1, -1.0))  # h1 = Relu(-1) = 0 for every jet
    model = mlp_model(weights, "gemm")
    config = write_audit(tmp_path, model, [TOPODNN_INPUT], {"nap": {}})
    result = hepaudit.audit(config, out=None, progress=False).explainers["nap"]
    layers = {la["name"]: la for la in result.fields["layers"]}
    assert layers["h1"]["never_active"] and layers["h1"]["active_nodes"] == 0
    assert layers["h1"]["rna_signal"] == [0.0] * 5 and layers["h1"]["sparsity"] == 1.0
    assert layers["h1"]["dead_nodes"] == list(range(5))
    assert not layers["h0"]["never_active"]
    findings = " ".join(result.fields["findings"])
    assert "h1 never activate" in findings and "Suggestion, not a guarantee" in findings
    assert "retrain" in findings.lower()


def test_cli_audit_writes_nap_fields_and_figure(tmp_path: Path) -> None:
    weights = dense_weights([90, 16, 8, 1], seed=5)
    config = write_audit(tmp_path, mlp_model(weights, "matmul"), [TOPODNN_INPUT], {"nap": {}})
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "hepaudit.cli", "audit", str(config), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    nap = report["explainers"]["nap"]
    assert nap["status"] == "ok"
    assert isinstance(nap["threshold"], float) and 0 <= nap["sparsity"] <= 1
    for layer in nap["layers"]:
        assert set(layer) >= {
            "name",
            "nodes",
            "rna_signal",
            "rna_background",
            "sparsity_signal",
            "sparsity_background",
            "sparsity",
        }
        assert len(layer["rna_signal"]) == len(layer["rna_background"]) == layer["nodes"]
        assert max(layer["rna_signal"]) == pytest.approx(1.0)
    assert [la["nodes"] for la in nap["layers"]] == [16, 8]
    assert "figures/nap_diagram.png" in nap["figures"]
    assert (out / "figures" / "nap_diagram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "nap_diagram.png" in (out / "report.html").read_text()


@pytest.mark.skipif(not DEEPAK8.exists(), reason="external CMS models not available")
def test_deepak8_layer_discovery_and_accumulation() -> None:
    tagger = Tagger(ModelConfig(path=str(DEEPAK8), score=0))
    relus = [n.output[0] for n in tagger.proto.graph.node if n.op_type == "Relu"]
    found = find_hidden_layers(tagger.proto, tagger.score_spec.output, tagger.score_spec.head)
    assert [la.name for la in found] == relus and len(found) == 23  # Softmax head left out
    assert all(la.channel_axis == 1 for la in found if la.name != "fc1_relu")
    assert next(la for la in found if la.name == "fc1_relu").channel_axis == -1
    context = AuditContext(tagger=tagger, builder=types.SimpleNamespace(inputs=()), features=[], groups={})
    explainer = NeuralActivationPatterns(NapOptions(figure=False), context)
    rng = np.random.default_rng(0)
    inputs = {
        "pfcand": rng.normal(0, 1, (48, 42, 100, 1)).astype(np.float32),
        "sv": rng.normal(0, 1, (48, 15, 7, 1)).astype(np.float32),
    }
    labels = (np.arange(48) % 2).astype(np.int8)
    out = tagger.run(inputs)
    chunk = Chunk(np.arange(48), inputs, out.score, out.logit, context, labels, extra=out.extra)
    state = explainer.update(explainer.start(), chunk)
    result = explainer.finish(state)
    layer = next(la for la in result.fields["layers"] if la["name"] == "pfcand_stage1_unit1_relu1")
    act = truncated_run(tagger.proto, inputs, ["pfcand_stage1_unit1_relu1"])["pfcand_stage1_unit1_relu1"]
    per_jet = act.astype(np.float64).sum(axis=(2, 3))
    sig, bkg = rna_by_definition(per_jet, labels)
    np.testing.assert_allclose(layer["rna_signal"], sig, rtol=1e-5)
    np.testing.assert_allclose(layer["rna_background"], bkg, rtol=1e-5)
    assert layer["nodes"] == act.shape[1]
    np.testing.assert_allclose(per_jet_channels(act, 1), per_jet, rtol=1e-6)


def _gelu_mlp(path: Path, activation: str = "gelu") -> Path:
    """x (N, 4) -> Gemm -> GELU written as x·0.5·(1 + erf(x/√2)) (or nothing) -> Gemm -> Sigmoid."""
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Gemm", ["x", "W0", "b0"], ["h"], transB=1)]
    hidden = "h"
    if activation == "gelu":
        nodes += [helper.make_node("Div", ["h", "rt2"], ["hs"]), helper.make_node("Erf", ["hs"], ["e"]),
                  helper.make_node("Add", ["e", "one"], ["e1"]), helper.make_node("Mul", ["h", "e1"], ["g"]),
                  helper.make_node("Mul", ["g", "half"], ["gelu"])]
        hidden = "gelu"
    nodes += [helper.make_node("Gemm", [hidden, "W1", "b1"], ["z"], transB=1),
              helper.make_node("Sigmoid", ["z"], ["score"])]
    inits = [numpy_helper.from_array(a, n) for n, a in {
        "W0": rng.normal(size=(6, 4)).astype(np.float32), "b0": rng.normal(size=6).astype(np.float32),
        "W1": rng.normal(size=(1, 6)).astype(np.float32), "b1": np.zeros(1, np.float32),
        "rt2": np.float32(np.sqrt(2)), "one": np.float32(1), "half": np.float32(0.5)}.items()]
    graph = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return save(model, path)


def test_nap_takes_gelu_layers_and_fails_alone_without_activations(tmp_path: Path) -> None:
    """A model without ReLU: NAP reads its GELU (written with Erf); a model without any activation
    fails NAP with a message while the other explainers and the audit go on."""
    from hepaudit.testing import tiny_audit

    config = tiny_audit(tmp_path, {"nap": {}, "dauc": {}})
    _gelu_mlp(tmp_path / "model.onnx")
    report = hepaudit.audit(config, out=None)
    layers = report.explainers["nap"].fields["layers"]
    assert [(row["name"], row["op"], row["nodes"]) for row in layers] == [("gelu", "Gelu", 6)]
    _gelu_mlp(tmp_path / "model.onnx", activation="none")
    report = hepaudit.audit(config, out=None)
    assert report.explainers["nap"].status == "failed"
    assert "found no activation nodes" in str(report.explainers["nap"].error)
    assert report.explainers["dauc"].status == "ok"


def test_debug_shows_the_traceback_of_an_explainer_that_fails_in_its_constructor(tmp_path: Path) -> None:
    from conftest import run_cli

    from hepaudit.testing import tiny_audit

    config = tiny_audit(tmp_path, {"nap": {}, "dauc": {}})
    _gelu_mlp(tmp_path / "model.onnx", activation="none")
    plain = run_cli("audit", config, "--out", tmp_path / "a")
    debug = run_cli("audit", config, "--out", tmp_path / "b", "--debug")
    assert plain.returncode == 0 and debug.returncode == 0, debug.stderr
    assert "found no activation nodes" in plain.stderr and "Traceback" not in plain.stderr
    assert "Traceback" in debug.stderr and "nap.py" in debug.stderr


def test_dnap_values_and_figure(tmp_path: Path) -> None:
    """The dNAP diagram's values are |RNA_sig − RNA_bkg| node by node, and it is drawn."""
    from hepaudit.testing import tiny_audit

    config = tiny_audit(tmp_path, {"nap": {}})
    result = hepaudit.audit(config, out=tmp_path / "out").explainers["nap"]
    for row in result.fields["layers"]:
        np.testing.assert_allclose(row["drna"], np.abs(np.subtract(row["rna_signal"], row["rna_background"])))
    assert (tmp_path / "out" / "figures" / "nap_difference.png").stat().st_size > 1000


@pytest.mark.parametrize("name,op,label", [
    ("/net/net.1/Relu_output_0", "Relu", "net.1"),  # TopoDNN (torch.onnx)
    ("pf_conv1/Relu:0", "Relu", "pf_conv1"),  # DeepDoubleX (tf2onnx)
    ("/pn/edge_convs.0/acts.1/Relu_output_0", "Relu", "edge_convs.0/acts.1"),  # ParticleNet
    ("/mod/edge_convs.0/sc_act/Relu_output_0", "Relu", "edge_convs.0/sc_act"),
    ("67", "Relu", "Relu 3"),  # a bare number: the op and the layer's place
    ("relu_1", "Relu", "Relu 3"),
])
def test_nap_layer_labels_are_readable(name: str, op: str, label: str) -> None:
    from hepaudit.explainers.nap_figures import layer_label

    assert layer_label(name, op, 2) == label
