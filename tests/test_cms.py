"""CMS-style inputs: preprocess.json, the variable table, PF-type flags, class-sum TvsQCD,
per-input groups, fixed-batch and checker-failing graphs, and the real CMS models.

The small model here has CMS's layout (channels-first (N, C, P), one input (N, C, P, 1),
masks, an input that the data cannot fill) and its own preprocess.json. Every input value is
checked against a per-jet numpy computation written from CMSSW's definition
clip((x - median) * norm_factor, lower, upper), pad beyond the jet's objects, not from
hepaudit's code. Tests using ../shared/external-models skip when it is absent.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import onnx
import pytest
import uproot
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))

from builders import mann_whitney_auc, toml_dumps  # noqa: E402
from conftest import run_cli  # noqa: E402

from hepaudit.config import load_config  # noqa: E402
from hepaudit.data.builders import InputBuilder  # noqa: E402
from hepaudit.data.pid import pf_type  # noqa: E402
from hepaudit.errors import ConfigError  # noqa: E402
from hepaudit.model.session import Tagger  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXTERNAL = REPO.parent / "shared" / "external-models"
PARTICLENET = EXTERNAL / "cms-ParticleNetAK8-General-V00" / "ParticleNet.onnx"
DEEPAK8 = EXTERNAL / "cms-DeepBoostedJet-V02-full" / "resnet.onnx"

P = 6  # pf objects per jet (var_length): truncates some toy jets and pads the others
P_SV = 3
PF_VARS = ["v_logpt", "v_etarel", "v_charge", "v_isGamma", "v_d0", "v_missing"]
POINT_VARS = ["v_etarel", "v_phirel"]
SV_VARS = ["sv_a", "sv_b"]
CLASSES = ["probTbcq", "probTbqq", "probQCDb", "probQCDothers"]
INFOS = {  # non-trivial medians, factors, narrow bounds (clipping happens), non-zero pads
    "v_logpt": dict(median=1.0, norm_factor=2.0, lower_bound=-2.0, upper_bound=3.0, pad=-1.5, replace_inf_value=0),
    "v_etarel": dict(median=0.01, norm_factor=4.0, lower_bound=-3.0, upper_bound=3.0, pad=0.0, replace_inf_value=0),
    "v_phirel": dict(median=-0.02, norm_factor=3.0, lower_bound=-1.0, upper_bound=1.0, pad=0.25, replace_inf_value=0),
    "v_charge": dict(median=0.0, norm_factor=2.0, lower_bound=-5.0, upper_bound=5.0, pad=0.0, replace_inf_value=0),
    "v_isGamma": dict(median=0.0, norm_factor=1.0, lower_bound=-5.0, upper_bound=5.0, pad=0.0, replace_inf_value=0),
    "v_d0": dict(median=0.1, norm_factor=10.0, lower_bound=-4.0, upper_bound=4.0, pad=0.5, replace_inf_value=0.3),
    "v_missing": dict(median=3.0, norm_factor=2.0, lower_bound=-5.0, upper_bound=5.0, pad=-0.75, replace_inf_value=0),
    "v_mask": dict(median=0.0, norm_factor=1.0, lower_bound=-5.0, upper_bound=5.0, pad=0.0, replace_inf_value=0),
    "sv_a": dict(median=1.0, norm_factor=1.0, lower_bound=-5.0, upper_bound=5.0, pad=0.0, replace_inf_value=0),
    "sv_b": dict(median=1.0, norm_factor=1.0, lower_bound=-5.0, upper_bound=5.0, pad=0.125, replace_inf_value=0),
}
SHAPES = {"pf_features": ["N", len(PF_VARS), P, 1], "pf_points": ["N", 2, P], "pf_mask": ["N", 1, P],
          "sv_features": ["N", 2, P_SV]}
VARIABLES = {"v_logpt": "log_pt", "v_etarel": "etarel", "v_phirel": "phirel", "v_charge": "part_charge",
             "v_isGamma": "is_photon", "v_d0": "part_d0", "v_mask": "mask"}


def preprocess_json() -> dict[str, object]:
    def table(names: list[str], length: int) -> dict[str, object]:
        return {"var_names": names, "var_length": length, "var_infos": {n: INFOS[n] for n in names}}
    return {"input_names": list(SHAPES), "flav_names": CLASSES,
            "pf_features": table(PF_VARS, P), "pf_points": table(POINT_VARS, P),
            "pf_mask": table(["v_mask"], P), "sv_features": table(SV_VARS, P_SV)}


def cms_jets(n: int, seed: int = 3) -> dict[str, object]:
    """Toy jets with 2..9 constituents (some truncated to P, some padded), PDG ids, charges and
    an impact-parameter-like branch holding inf, NaN and 1e33 now and then."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(2, 10, n)
    label = rng.integers(0, 2, n)
    total = int(counts.sum())
    jet_eta = np.repeat(rng.uniform(-2, 2, n), counts)
    jet_phi = np.repeat(rng.uniform(-np.pi, np.pi, n), counts)
    pt = rng.exponential(20, total) + 1 + np.repeat(label * 10, counts)
    eta = jet_eta + rng.normal(0, 0.3, total)
    phi = jet_phi + rng.normal(0, 0.3, total)
    pid = rng.choice([22, 211, -211, 321, 2112, 130, -11, 13], total)
    charge = np.select([np.isin(pid, [211, 321, 13]), np.isin(pid, [-211, -11])], [1, -1], 0)
    d0 = rng.normal(0, 0.2, total)
    d0[rng.choice(total, 12, replace=False)] = [np.inf, -np.inf, np.nan, 1e33] * 3
    def jag(x: np.ndarray) -> ak.Array:
        return ak.unflatten(x, counts)
    return {"is_signal": label.astype(np.int32), "part_px": jag(pt * np.cos(phi)), "part_py": jag(pt * np.sin(phi)),
            "part_pz": jag(pt * np.sinh(eta)), "part_energy": jag(pt * np.cosh(eta) * 1.0001),
            "part_pid": jag(pid.astype(np.int32)), "part_charge": jag(charge.astype(np.int32)),
            "part_d0": jag(d0)}


def write_tree(path: Path, jets: dict[str, object]) -> Path:
    with uproot.recreate(path) as f:
        f.mktree("jets", {k: v.type if isinstance(v, ak.Array) else v.dtype for k, v in jets.items()})
        f["jets"].extend(jets)
    return path


def cms_model(batch: int | str = "N", unsorted: bool = False, seed: int = 0) -> tuple[onnx.ModelProto, np.ndarray,
                                                                                        np.ndarray]:
    """Flatten every input, concatenate, one dense layer to 4 logits, Softmax. With ``unsorted`` the
    nodes are stored in reverse order: onnx.checker rejects the graph, onnxruntime sorts it itself."""
    rng = np.random.default_rng(seed)
    width = sum(int(np.prod(s[1:])) for s in SHAPES.values())
    w = rng.normal(0, 0.3, (width, len(CLASSES))).astype(np.float32)
    b = rng.normal(0, 0.1, len(CLASSES)).astype(np.float32)
    nodes = [helper.make_node("Flatten", [name], [f"{name}_flat"], axis=1) for name in SHAPES]
    nodes.append(helper.make_node("Concat", [f"{name}_flat" for name in SHAPES], ["all"], axis=1))
    nodes.append(helper.make_node("Gemm", ["all", "W", "B"], ["logits"]))
    nodes.append(helper.make_node("Softmax", ["logits"], ["softmax"], axis=1))
    if unsorted:
        nodes = nodes[::-1]
    graph = helper.make_graph(
        nodes, "cms_toy",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch, *s[1:]]) for n, s in SHAPES.items()],
        [helper.make_tensor_value_info("softmax", TensorProto.FLOAT, [batch, len(CLASSES)])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model, w, b


def forward(inputs: dict[str, np.ndarray], w: np.ndarray, b: np.ndarray) -> np.ndarray:
    flat = np.concatenate([inputs[n].reshape(len(inputs[n]), -1) for n in SHAPES], axis=1).astype(np.float64)
    return flat @ w + b


def reference_inputs(jets: dict[str, object]) -> dict[str, np.ndarray]:
    """Every input, jet by jet with numpy, straight from CMSSW's definition."""
    def norm(x: float, var: str) -> float:
        i = INFOS[var]
        if not np.isfinite(x) or abs(x) > 1e32:
            x = i["replace_inf_value"]
        return float(np.clip((x - i["median"]) * i["norm_factor"], i["lower_bound"], i["upper_bound"]))
    n = len(jets["is_signal"])
    out = {name: np.zeros([n, *s[1:]], np.float32) for name, s in SHAPES.items()}
    for j in range(n):
        px, py, pz, e = (np.asarray(jets[k][j], np.float64) for k in ("part_px", "part_py", "part_pz", "part_energy"))
        pid, charge, d0 = (np.asarray(jets[k][j]) for k in ("part_pid", "part_charge", "part_d0"))
        pt = np.hypot(px, py)
        order = np.argsort(-pt, kind="stable")
        jpx, jpy, jpz = px.sum(), py.sum(), pz.sum()
        jeta, jphi = np.arcsinh(jpz / np.hypot(jpx, jpy)), np.arctan2(jpy, jpx)
        eta, phi = np.arcsinh(pz / pt), np.arctan2(py, px)
        raw = {
            "v_logpt": np.log(pt), "v_etarel": np.sign(jeta) * (eta - jeta),
            "v_phirel": (phi - jphi + np.pi) % (2 * np.pi) - np.pi, "v_charge": charge.astype(float),
            "v_isGamma": (np.abs(pid) == 22).astype(float), "v_d0": d0, "v_mask": np.ones(len(pt)),
        }
        for name, names, length in (("pf_features", PF_VARS, P), ("pf_points", POINT_VARS, P),
                                    ("pf_mask", ["v_mask"], P), ("sv_features", SV_VARS, P_SV)):
            flat = out[name].reshape(n, len(names), length)
            for c, var in enumerate(names):
                for p in range(length):
                    if var in raw and p < len(pt):
                        flat[j, c, p] = norm(raw[var][order[p]], var)
                    else:  # padding, or a variable the data does not have
                        flat[j, c, p] = INFOS[var]["pad"]
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    d = tmp_path_factory.mktemp("cms")
    jets = cms_jets(240)
    write_tree(d / "jets.root", jets)
    (d / "preprocess.json").write_text(json.dumps(preprocess_json()))
    model, w, b = cms_model()
    onnx.save(model, d / "model.onnx")
    fixed, _, _ = cms_model(batch=7, unsorted=True)
    (d / "fixed").mkdir()
    onnx.save(fixed, d / "fixed" / "model.onnx")
    return {"dir": d, "jets": jets, "w": w, "b": b, "ref": reference_inputs(jets)}


def config(model: str = "model.onnx", explainers: dict[str, object] | None = None,
           variables: dict[str, str] | None = None, json_name: str = "preprocess.json", **data: object) -> str:
    return toml_dumps({
        "model": {"path": model, "score": {"signal": ["probTbcq", "probTbqq"],
                                           "background": ["probQCDb", "probQCDothers"]}},
        "data": {"files": ["jets.root"], "tree": "jets", "label": "is_signal", "step_size": 100, **data},
        "inputs": [{"name": "*", "kind": "cms", "preprocess_json": json_name, "pid": "part_pid",
                    "momentum": {"px": "part_px", "py": "part_py", "pz": "part_pz", "energy": "part_energy"},
                    "variables": variables or VARIABLES}],
        "explainers": explainers or {"dauc": {"features": False, "groups": ["input"]}},
    })


def test_pf_types_match_a_hand_table() -> None:
    ids = np.array([11, 13, 22, 211, 321, 2212, 130, 310, 2112, 3122, 12, 3312])
    flags = pf_type(ids)
    expected = {"is_electron": [11], "is_muon": [13], "is_photon": [22], "is_charged_hadron": [211, 321, 2212, 3312],
                "is_neutral_hadron": [130, 310, 2112, 3122]}
    for name, members in expected.items():
        np.testing.assert_array_equal(flags[name], np.isin(ids, members).astype(np.float32), err_msg=name)
    assert sum(f[ids == 12] for f in flags.values()) == 0  # a neutrino is no PF candidate


def test_inputs_element_by_element(setup: dict[str, object]) -> None:
    d = setup["dir"]
    (d / "audit.toml").write_text(config())
    cfg = load_config(d / "audit.toml")
    assert [i.name for i in cfg.inputs] == list(SHAPES)  # name = "*" expanded in the json's order
    assert cfg.model.classes == tuple(CLASSES)  # from flav_names
    tagger = Tagger(cfg.model)
    builder = InputBuilder(cfg.inputs, {}, tagger.info.inputs)
    arrays = uproot.open(d / "jets.root")["jets"].arrays(builder.branches)
    built = builder.build(arrays)
    for name, want in setup["ref"].items():
        assert built[name].shape == want.shape, name
        assert built[name].dtype == np.float32
        np.testing.assert_allclose(built[name], want, rtol=2e-5, atol=2e-5, err_msg=name)
    # the clipping, the inf replacement, the padding and truncation all happen in this sample
    ref = setup["ref"]["pf_features"][..., 0]
    assert (ref[:, 0] == 3.0).any() and (ref[:, 0] == -1.5).any()
    assert np.isclose(ref[:, PF_VARS.index("v_d0")], (0.3 - 0.1) * 10).any()
    # names: prefixed by input, channels-first; the mask input has no features
    assert builder.features[0] == "pf_features.v_logpt_0" and builder.features[P] == "pf_features.v_etarel_0"
    assert not any(f.startswith("pf_mask.") for f in builder.features)
    assert len(builder.features) == (len(PF_VARS) + 2) * P + 2 * P_SV
    groups = builder.groups()
    assert groups["input_pf_points"] == list(range(len(PF_VARS) * P, (len(PF_VARS) + 2) * P))
    assert [builder.features[k] for k in groups["feature_pf_points.v_phirel"]] == [f"pf_points.v_phirel_{p}"
                                                                                    for p in range(P)]
    assert builder.features[groups["pf_features.particle_2"][1]] == "pf_features.v_etarel_2"
    assert any("v_missing" in w and "pad" in w for w in builder.warnings)
    assert any("sv_a" in w for w in builder.warnings)


def _per_jet(path: Path) -> dict[str, np.ndarray]:
    return uproot.open(path)["hepaudit"].arrays(library="np")


@pytest.mark.parametrize("model", ["model.onnx", "fixed/model.onnx"])
def test_audit_tvsqcd_and_input_groups(setup: dict[str, object], model: str) -> None:
    """The audit scores TvsQCD as CMS defines it and occludes whole inputs; the second model has a
    fixed batch of 7 (240 jets: the last batch is padded) and fails onnx.checker but runs."""
    d = setup["dir"]
    if model.startswith("fixed"):
        with pytest.raises(onnx.checker.ValidationError):
            onnx.checker.check_model(onnx.load(d / model))
    (d / "audit_run.toml").write_text(config(model, {"dauc": {"features": False, "groups": ["input"]},
                                                     "mad": {"groups": "feature", "features": False}}))
    out = d / ("out_" + model.split("/")[0].replace(".", "_"))
    res = run_cli("audit", d / "audit_run.toml", "--out", out, "--force")
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["score"]["signal"] == ["probTbcq", "probTbqq"]
    assert any("v_missing" in w for w in report["warnings"])
    ref, w, b = setup["ref"], setup["w"], setup["b"]
    z = forward(ref, w, b)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    tvsqcd = (p[:, 0] + p[:, 1]) / (p[:, 0] + p[:, 1] + p[:, 2] + p[:, 3])
    per_jet = _per_jet(out / "per_jet.root")
    np.testing.assert_allclose(per_jet["score"], tvsqcd, rtol=1e-5, atol=1e-6)
    labels = np.asarray(setup["jets"]["is_signal"])
    base = mann_whitney_auc(tvsqcd, labels)
    dauc = {g["feature"]: g["score"] for g in report["explainers"]["dauc"]["group_importance"]}
    assert set(dauc) == {f"input_{n}" for n in ("pf_features", "pf_points", "sv_features")}
    for name in ("pf_features", "pf_points", "sv_features"):
        occluded = {k: v.copy() for k, v in ref.items()}
        occluded[name][:] = ref[name].mean(axis=0, dtype=np.float64)  # x̄ over every audited jet
        zo = forward(occluded, w, b)
        po = np.exp(zo - zo.max(axis=1, keepdims=True))
        so = (po[:, 0] + po[:, 1]) / po.sum(axis=1)
        assert dauc[f"input_{name}"] == pytest.approx(base - mann_whitney_auc(so, labels), abs=2e-4), name
    assert dauc["input_sv_features"] == pytest.approx(0.0, abs=1e-9)  # every SV variable is padding: constant
    mad = report["explainers"]["mad"]
    assert mad["status"] == "ok" and mad["feature_importance"] == []
    assert {g["feature"] for g in mad["group_importance"]} >= {"feature_pf_features.v_logpt",
                                                                "feature_pf_points.v_etarel"}


def test_config_errors_name_the_key(setup: dict[str, object]) -> None:
    d = setup["dir"]
    (d / "bad.toml").write_text(config(variables={**VARIABLES, "v_logptt": "log_pt"}))
    res = run_cli("audit", d / "bad.toml", "--out", d / "bad_out")
    assert res.returncode == 2 and "v_logptt" in res.stderr
    short = json.loads((d / "preprocess.json").read_text())
    short["pf_points"]["var_names"] = ["v_etarel"]
    (d / "short.json").write_text(json.dumps(short))
    (d / "short.toml").write_text(config(json_name="short.json",
                                         variables={k: v for k, v in VARIABLES.items() if k != "v_phirel"}))
    res = run_cli("audit", d / "short.toml", "--out", d / "short_out")
    assert res.returncode == 2 and "pf_points" in res.stderr and "2 channels" in res.stderr


def test_init_proposes_a_variable_table(setup: dict[str, object]) -> None:
    d = setup["dir"]
    res = run_cli("init", "--model", d / "model.onnx", "--data", d / "jets.root")
    assert res.returncode == 0, res.stderr
    assert 'kind = "cms"' in res.stdout and "preprocess.json" in res.stdout
    assert 'v_charge = "part_charge"' in res.stdout.replace("  ", " ")
    assert "v_missing" in res.stderr  # listed as missing


# -- the real CMS models (skipped without ../shared/external-models) ------------------------------------

EXAMPLES = REPO / "examples" / "cms"


@pytest.mark.skipif(not PARTICLENET.exists(), reason="external CMS models not present")
@pytest.mark.skipif(not (REPO / "examples" / "data" / "top_qcd_test.root").exists(), reason="example jets absent")
@pytest.mark.parametrize("example,jets", [("audit_particlenet.toml", 60), ("audit_deepak8.toml", 300)])
def test_cms_examples_run(example: str, jets: int, tmp_path: Path) -> None:
    """The shipped examples, on a few jets and one cheap explainer (the full audit is in the README)."""
    from dataclasses import replace

    import hepaudit

    cfg = load_config(EXAMPLES / example)
    cfg = replace(cfg, explainers={"mad": {"features": False, "groups": ["input"]}})
    report = hepaudit.audit(cfg, out=None, max_jets=jets, progress=False)
    mad = report.explainers["mad"]
    assert mad.status == "ok", mad.error
    assert report.model["score"]["signal"] == ["probTbcq", "probTbqq"]
    groups = {g.feature: g.score for g in mad.group_importance}
    pf = "input_pf_features" if "input_pf_features" in groups else "input_pfcand"
    assert groups[pf] > 0  # the PF candidates move the score
    sv = "input_sv_features" if "input_sv_features" in groups else "input_sv"
    assert groups[sv] == pytest.approx(0.0, abs=1e-9)  # no secondary vertices at generator level: constant
    assert any("pad value" in w for w in report.warnings)


def test_weaver_preprocess_json_is_read(tmp_path: Path) -> None:
    """weaver's format (most of cms-data/RecoBTag-Combined): min_length/max_length, output_names."""
    weaver = preprocess_json()
    del weaver["flav_names"]
    weaver["output_names"] = CLASSES
    for name in SHAPES:
        length = weaver[name].pop("var_length")
        weaver[name].update(min_length=1, max_length=length)
    (tmp_path / "weaver.json").write_text(json.dumps(weaver))
    from hepaudit.data.preprocess_json import read_preprocess_json

    pre = read_preprocess_json(tmp_path / "weaver.json")
    assert pre.flav_names == tuple(CLASSES)
    assert pre.inputs["pf_features"].var_length == P and pre.inputs["pf_features"].min_length == 1
    # a single output name is a tensor's, not the classes
    weaver["output_names"] = ["softmax"]
    (tmp_path / "weaver.json").write_text(json.dumps(weaver))
    assert read_preprocess_json(tmp_path / "weaver.json").flav_names is None
    weaver["pf_features"]["min_length"] = P + 1
    (tmp_path / "weaver.json").write_text(json.dumps(weaver))
    with pytest.raises(ConfigError, match="min_length 7 is above max_length 6"):
        read_preprocess_json(tmp_path / "weaver.json")
    del weaver["pf_features"]["max_length"], weaver["pf_features"]["min_length"]
    (tmp_path / "weaver.json").write_text(json.dumps(weaver))
    with pytest.raises(ConfigError, match="var_length .* or min_length/max_length"):
        read_preprocess_json(tmp_path / "weaver.json")


def test_particles_layout_is_the_transpose(setup: dict[str, object]) -> None:
    """layout = "particles" builds (N, P, C) for channels-last models: the same numbers, with
    features named the same way in the model's (object-major) memory order."""
    from hepaudit.config import InputConfig, MomentumBranches
    from hepaudit.model.graph import TensorInfo

    momentum = MomentumBranches(px="part_px", py="part_py", pz="part_pz", energy="part_energy")
    variables = {"v_logpt": "log_pt", "v_etarel": "etarel", "v_charge": "part_charge"}
    built = {}
    for layout, shape in (("flat", ("N", 3, P)), ("particles", ("N", P, 3))):
        cfg = InputConfig(name="pf", kind="cms", momentum=momentum, max_particles=P, layout=layout,  # type: ignore[arg-type]
                          variables=dict(variables))
        builder = InputBuilder((cfg,), {}, [TensorInfo("pf", shape, "float32")])
        arrays = uproot.open(setup["dir"] / "jets.root")["jets"].arrays(builder.branches)
        built[layout] = (builder.build(arrays)["pf"], builder)
    channels, particles = built["flat"][0], built["particles"][0]
    np.testing.assert_array_equal(particles, channels.transpose(0, 2, 1))
    names = built["particles"][1].features
    assert names[:4] == ["v_logpt_0", "v_etarel_0", "v_charge_0", "v_logpt_1"]
    # each named feature reads the value it names
    from hepaudit.data.builders import feature_matrix

    a = feature_matrix(built["flat"][1], {"pf": channels})
    b = feature_matrix(built["particles"][1], {"pf": particles})
    order = [built["flat"][1].features.index(n) for n in names]
    np.testing.assert_array_equal(a[:, order], b)


def test_group_kinds_do_not_overlap(setup: dict[str, object]) -> None:
    """groups = ["input"] takes the whole-input groups only, also when inputs are named input_*."""
    from hepaudit.explainers.occlusion import group_kind

    assert group_kind("input_4.particle_0") == "particle"
    assert group_kind("input_input_4") == "input"
    assert group_kind("feature_input_4.cpf_0") == "feature"
    assert group_kind("my_group") is None


def test_init_on_a_deepjet_like_model_writes_valid_toml(setup: dict[str, object], tmp_path: Path) -> None:
    """Jet-level globals beside particle inputs are jet branches (not 5 particles × pt, eta, phi);
    a symbolic particle axis gets a number marked CHECK, so the TOML parses; weaver's variable
    names (part_deta, jet_pfcand_pt_log, part_logptrel) map to their derived features."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    from hepaudit.data.preprocess_json import read_preprocess_json
    from hepaudit.starter import cms_variable_table, starter_config

    nodes = [helper.make_node("Flatten", ["glob"], ["g"]), helper.make_node("ReduceSum", ["pf", "ax"], ["p"],
                                                                          keepdims=0),
             helper.make_node("Concat", ["g", "p"], ["c"], axis=1), helper.make_node("ReduceSum", ["c", "one"], ["s"]),
             helper.make_node("Sigmoid", ["s"], ["score"])]
    graph = helper.make_graph(nodes, "deepjetish",
                              [helper.make_tensor_value_info("glob", TensorProto.FLOAT, ["N", 15]),
                               helper.make_tensor_value_info("pf", TensorProto.FLOAT, ["N", "n_pf", 16])],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
                              [numpy_helper.from_array(np.array([1], np.int64), "ax"),
                               numpy_helper.from_array(np.array([1], np.int64), "one")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, tmp_path / "model.onnx")
    text, notes = starter_config(tmp_path / "model.onnx", setup["dir"] / "jets.root")
    doc = tomllib.loads(text)
    tables = {t["name"]: t for t in doc["inputs"]}
    assert tables["glob"]["kind"] == "jet"
    assert tables["pf"]["max_particles"] == 50 and "symbolic (n_pf)" in text
    weaver = {"input_names": ["pf_features"], "pf_features": {
        "var_names": ["part_deta", "part_dphi", "jet_pfcand_pt_log", "part_logptrel", "part_e_log", "part_deltaR",
                      "part_mask"], "min_length": 1, "max_length": 128}}
    (tmp_path / "preprocess.json").write_text(json.dumps(weaver))
    table, missing = cms_variable_table(read_preprocess_json(tmp_path / "preprocess.json"), [], None)
    assert table == {"part_deta": "deta", "part_dphi": "dphi", "jet_pfcand_pt_log": "log_pt",
                     "part_logptrel": "log_pt_rel", "part_e_log": "log_energy", "part_deltaR": "dr",
                     "part_mask": "mask"} and not missing
