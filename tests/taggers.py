"""The real collaboration taggers of ../shared/external-models, each with an audit config.

Shared by tests/test_taggers.py and benchmarks/bench_taggers.py. Each entry says where the
model is and how its inputs are built from one ROOT file: real generator-level jets (the
example Pythia top/QCD sample: four-momenta, charges, PDG ids) plus synthetic detector
variables seeded here (per particle ``syn_a``, ``syn_b``; a secondary-vertex collection
``sv_*`` of 0..4 objects; jet-level ``g0``...``g15``), because no public sample has them. The
numbers a tagger gives on these jets describe the tagger on these inputs, not its performance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import awkward as ak
import numpy as np
import uproot
from builders import write_jets

if TYPE_CHECKING:
    import onnx

REPO = Path(__file__).resolve().parents[1]
EXTERNAL = REPO.parent / "shared" / "external-models"
SAMPLE = REPO / "examples" / "data" / "top_qcd_test.root"

MOMENTUM = {"px": "part_px", "py": "part_py", "pz": "part_pz", "energy": "part_energy"}
SV_MOMENTUM = {"px": "sv_px", "py": "sv_py", "pz": "sv_pz", "energy": "sv_energy"}
B_VS_LIGHT = {"signal": ["probb", "probbb", "problepb"], "background": ["probuds", "probg"]}
FLAVOURS = ["probb", "probbb", "problepb", "probc", "probuds", "probg"]


@dataclass(frozen=True)
class TaggerCase:
    """One model: its file, its score, its [[inputs]] tables (paths relative to EXTERNAL)."""

    name: str
    path: str
    model: dict[str, Any]
    inputs: list[dict[str, Any]]
    note: str = ""
    #: the finite-difference step for the gradient check, when the default is too coarse
    fd_step: float | None = None

    @property
    def file(self) -> Path:
        return EXTERNAL / self.path

    def available(self) -> bool:
        return self.file.exists()

    def config(self, data: Path, explainers: dict[str, Any], out_of_folder: Path = EXTERNAL) -> dict[str, Any]:
        """An audit config for ``data`` running ``explainers``."""
        model = {"path": str(self.file), **self.model}
        inputs = []
        for table in self.inputs:
            table = dict(table)
            if "preprocess_json" in table:
                table["preprocess_json"] = str(out_of_folder / table["preprocess_json"])
            inputs.append(table)
        return {"model": model, "data": {"files": [str(data)], "tree": "jets", "label": "is_signal",
                                         "step_size": 64},
                "inputs": inputs, "explainers": explainers, "execution": {"progress": False}}


def _cms(name: str, variables: dict[str, Any], length: int | None = None, layout: str | None = None,
         momentum: dict[str, str] | None = MOMENTUM, **more: Any) -> dict[str, Any]:
    table: dict[str, Any] = {"name": name, "kind": "cms", "variables": variables, **more}
    if momentum:
        table["momentum"] = momentum
    if length:
        table["max_particles"] = length
    if layout:
        table["layout"] = layout
    return table


def _channels(prefix: str, count: int, sources: list[Any]) -> dict[str, Any]:
    """``count`` variables named prefix_0.. with the given sources first, synthetic after."""
    out: dict[str, Any] = {}
    for i in range(count):
        out[f"{prefix}_{i}"] = sources[i] if i < len(sources) else ("syn_a" if i % 2 else "syn_b")
    return out


def _raw_four_vector(prefix: str) -> dict[str, Any]:
    """(px, py, pz, E) as they are: CMS's normalisation with its bounds opened."""
    return {f"{prefix}_{c}": {"source": c, "lower_bound": -1e6, "upper_bound": 1e6}
            for c in ("px", "py", "pz", "energy")}


def _jetclass(name: str, onnx_file: str) -> TaggerCase:
    """The JetClass ParticleNet in one of its two exports: the same inputs, all 8 variables mapped."""
    return TaggerCase(
        name, f"jetclass-ParticleNet-kin/{onnx_file}",
        {"score": {"signal": ["label_Tbqq"], "background": ["label_QCD"]}},
        [{"name": "*", "kind": "cms", "preprocess_json": "jetclass-ParticleNet-kin/preprocess.json",
          "momentum": MOMENTUM,
          "variables": {"part_deta": "deta", "part_dphi": "dphi", "part_pt_log": "log_pt",
                        "part_e_log": "log_energy", "part_logptrel": "log_pt_rel", "part_logerel": "log_energy_rel",
                        "part_deltaR": "dr", "part_mask": "mask"}}],
    )


PF_KINEMATICS = ["log_pt", "log_energy", "etarel", "phirel", "dr", "part_charge"]
SV_SOURCES = ["sv_a", "sv_b", "sv_c"]

CASES = [
    TaggerCase(
        "particlenet_ak8", "cms-ParticleNetAK8-General-V00/ParticleNet.onnx",
        {"score": {"signal": ["probTbcq", "probTbqq"],
                   "background": ["probQCDbb", "probQCDcc", "probQCDb", "probQCDc", "probQCDothers"]}},
        [{"name": "*", "kind": "cms", "preprocess_json": "cms-ParticleNetAK8-General-V00/preprocess.json",
          "momentum": MOMENTUM, "pid": "part_pid",
          "variables": {"pfcand_pt_log_nopuppi": "log_pt", "pfcand_e_log_nopuppi": "log_energy",
                        "pfcand_etarel": "etarel", "pfcand_phirel": "phirel", "pfcand_abseta": "abs_eta",
                        "pfcand_charge": "part_charge", "pfcand_isGamma": "is_photon", "pfcand_mask": "mask",
                        "pfcand_dz": "syn_a", "pfcand_dxy": "syn_b"}}],
    ),
    TaggerCase(
        "deepak8", "cms-DeepBoostedJet-V02-full/resnet.onnx",
        {"classes": ["probTbcq", "probTbqq", "probTbc", "probTbq", "probWcq", "probWqq", "probZbb", "probZcc",
                     "probZqq", "probHbb", "probHcc", "probHqqqq", "probQCDbb", "probQCDcc", "probQCDb", "probQCDc",
                     "probQCDothers"],
         "score": {"signal": ["probTbcq", "probTbqq"],
                   "background": ["probQCDbb", "probQCDcc", "probQCDb", "probQCDc", "probQCDothers"]}},
        [_cms("pfcand", _channels("pf", 42, PF_KINEMATICS), 100),
         _cms("sv", _channels("sv", 15, SV_SOURCES), 7, momentum=None)],
    ),
    TaggerCase(
        "hlt_particlenet_ak4", "cms-HLT-ParticleNetAK4-V01/particle-net.onnx",
        {"score": {"signal": ["label_b"], "background": ["label_uds", "label_g"]}},
        [{"name": "*", "kind": "cms", "preprocess_json": "cms-HLT-ParticleNetAK4-V01/preprocess.json",
          "momentum": MOMENTUM,
          "variables": {"jet_pfcand_pt_log": "log_pt", "jet_pfcand_energy_log": "log_energy",
                        "jet_pfcand_deta": "deta", "jet_pfcand_dphi": "dphi", "jet_pfcand_eta": "eta",
                        "jet_pfcand_charge": "part_charge", "jet_pfcand_etarel": "etarel",
                        "jet_pfcand_dz": "syn_a", "jet_pfcand_dxy": "syn_b", "pfcand_mask": "mask"}}],
        note="SV inputs padded (the SV collection is not mapped)",
    ),
    TaggerCase(
        "robust_part_ak4", "cms-RobustParTAK4-PUPPI-V00/RobustParTAK4.onnx",
        {"classes": FLAVOURS, "score": B_VS_LIGHT},
        [_cms("input_1", _channels("cpf", 16, PF_KINEMATICS), 25, "particles"),
         _cms("input_2", _channels("npf", 8, PF_KINEMATICS), 25, "particles"),
         _cms("input_3", _channels("sv", 14, SV_SOURCES), 5, "particles", momentum=SV_MOMENTUM),
         # the four-vectors are raw GeV (CMSSW feeds them unnormalised): no clipping at ±5
         _cms("input_4", _raw_four_vector("cpf"), 25, "particles"),
         _cms("input_5", _raw_four_vector("npf"), 25, "particles"),
         _cms("input_6", _raw_four_vector("sv4"), 5, "particles", momentum=SV_MOMENTUM)],
        # ln ΔR of nearly collinear particles bends within 1e-3 GeV of the four-vectors
        fd_step=1e-5,
    ),
    TaggerCase(
        "deepjet_run3", "cms-DeepJet-Run3-12X/DeepJet_Run3_122X.onnx",
        {"output": "ID_pred/Softmax:0", "classes": FLAVOURS, "score": B_VS_LIGHT},
        [{"name": "input_1", "kind": "jet", "branches": [f"g{i}" for i in range(15)]},
         _cms("input_2", _channels("cpf", 16, PF_KINEMATICS), 25, "particles"),
         _cms("input_3", _channels("npf", 6, PF_KINEMATICS), 25, "particles"),
         _cms("input_4", _channels("sv", 12, SV_SOURCES), 4, "particles", momentum=SV_MOMENTUM),
         {"name": "input_5", "kind": "jet", "branches": ["jet_pt"]}],
        note="input_5 only feeds the jet_pt output: every attribution to it is 0",
    ),
    TaggerCase(
        "deepdoublex_bvl", "cms-DeepDoubleX-102X-V02-BvL/BvL.onnx",
        {"classes": ["probQCD", "probHbb"], "score": "probHbb"},
        [_cms("input_1", _channels("db", 5, ["log_pt", "etarel", "phirel"]), 1, "particles"),
         _cms("input_2", _channels("cpf", 8, PF_KINEMATICS), 60, "particles"),
         _cms("input_3", _channels("trk", 21, PF_KINEMATICS), 40, "particles"),
         _cms("input_4", _channels("sv", 7, SV_SOURCES), 5, "particles", momentum=SV_MOMENTUM)],
    ),
    TaggerCase(
        "interaction_net", "cms-HiggsInteractionNet-V00/model.onnx",
        {"score": "Hbb"},
        [{"name": "input_cpf", "kind": "cms", "preprocess_json": "cms-HiggsInteractionNet-V00/preprocess.json",
          "momentum": MOMENTUM,
          "variables": {"pfcand_ptrel": "pt_rel", "pfcand_erel": "energy_rel", "pfcand_phirel": "phirel",
                        "pfcand_etarel": "etarel", "pfcand_deltaR": "dr", "pfcand_dz": "syn_a",
                        "pfcand_dxy": "syn_b"}},
         {"name": "input_sv", "kind": "cms", "preprocess_json": "cms-HiggsInteractionNet-V00/preprocess.json",
          "momentum": SV_MOMENTUM,
          "variables": {"sv_ptrel": "pt_rel", "sv_erel": "energy_rel", "sv_phirel": "phirel",
                        "sv_etarel": "etarel", "sv_deltaR": "dr", "sv_mass": "sv_a", "sv_ntracks": "sv_b"}}],
    ),
    TaggerCase(
        "hls4ml_mlp", "hls4ml-three-layer-pytorch/three_layer_pytorch.onnx",
        {"classes": ["g", "q", "W", "Z", "t"], "score": "t"},
        [{"name": "0", "kind": "jet", "branches": [f"g{i}" for i in range(16)]}],
        note="fixed batch of 789444: every onnxruntime call runs that many rows",
    ),
    _jetclass("jetclass_particlenet", "ParticleNet_kin.onnx"),
    _jetclass("jetclass_particlenet_dynamo", "ParticleNet_kin_dynamo.onnx"),
]
BY_NAME = {c.name: c for c in CASES}


def write_sample(path: Path, per_class: int = 4, seed: int = 5) -> Path:
    """``per_class`` signal and background jets of the example sample, with the synthetic
    detector variables above, as a ROOT file."""
    with uproot.open(SAMPLE) as f:
        tree = f["jets"]
        labels = tree["is_signal"].array(library="np")
        pick = np.concatenate([np.flatnonzero(labels == 1)[:per_class], np.flatnonzero(labels == 0)[:per_class]])
        arrays = tree.arrays(["jet_pt", "is_signal", "part_px", "part_py", "part_pz", "part_energy",
                              "part_pid", "part_charge"])[pick]
    rng = np.random.default_rng(seed)
    n = len(arrays)
    counts = ak.to_numpy(ak.num(arrays.part_px, axis=1))
    out: dict[str, Any] = {"jet_pt": ak.to_numpy(arrays.jet_pt).astype(np.float32),
                           "is_signal": ak.to_numpy(arrays.is_signal).astype(np.int32)}
    for b in ("part_px", "part_py", "part_pz", "part_energy", "part_pid", "part_charge"):
        out[b] = arrays[b]
    for b in ("syn_a", "syn_b"):
        out[b] = ak.unflatten(rng.normal(size=int(counts.sum())).astype(np.float32), counts)
    n_sv = rng.integers(0, 5, n)
    total = int(n_sv.sum())
    # secondary vertices near the jet axis: a fraction of the jet's momentum each
    frac = rng.uniform(0.05, 0.3, total)
    jet_p = np.stack([ak.to_numpy(ak.sum(arrays[b], axis=1)) for b in ("part_px", "part_py", "part_pz")], axis=1)
    p = np.repeat(jet_p, n_sv, axis=0) * frac[:, None] * (1 + 0.05 * rng.normal(size=(total, 3)))
    mass = rng.uniform(0.5, 4.0, total)
    energy = np.sqrt((p**2).sum(axis=1) + mass**2)
    for i, b in enumerate(("sv_px", "sv_py", "sv_pz")):
        out[b] = ak.unflatten(p[:, i].astype(np.float32), n_sv)
    out["sv_energy"] = ak.unflatten(energy.astype(np.float32), n_sv)
    for b in SV_SOURCES:
        out[b] = ak.unflatten(rng.normal(size=total).astype(np.float32), n_sv)
    for i in range(16):
        out[f"g{i}"] = rng.normal(size=n).astype(np.float32)
    return write_jets(path, out)


def float64_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float64 copy of a float32 graph for finite differences: initializers, Constant and
    ConstantOfShape values, Casts to float, graph inputs and outputs, subgraphs too. Casts to
    integers stay. onnxruntime refuses some ops in float64 (Conv on CPU): callers fall back."""
    import onnx
    from onnx import TensorProto, numpy_helper

    def tensor64(t: onnx.TensorProto) -> onnx.TensorProto:
        if t.data_type != TensorProto.FLOAT:
            return t
        return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name)

    def convert(graph: onnx.GraphProto) -> None:
        for i, t in enumerate(graph.initializer):
            graph.initializer[i].CopyFrom(tensor64(t))
        for node in graph.node:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    a.t.CopyFrom(tensor64(a.t))
                elif a.type == onnx.AttributeProto.GRAPH:
                    convert(a.g)
                elif node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                    a.i = TensorProto.DOUBLE
        del graph.value_info[:]
        for v in list(graph.input) + list(graph.output):
            if v.type.tensor_type.elem_type == TensorProto.FLOAT:
                v.type.tensor_type.elem_type = TensorProto.DOUBLE

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    _pointwise_convs_as_matmul(copy)
    convert(copy.graph)
    _float32_islands(copy, FLOAT32_ONLY)
    return copy


#: ops onnxruntime's CPU provider has in float32 only: the float64 copy runs them in float32
#: (their rounding, ~1e-7 relative, then limits the finite-difference step)
FLOAT32_ONLY = {"Erf": (0,), "Atan": (0,), "LSTM": (0, 1, 2, 3, 5, 6, 7), "GRU": (0, 1, 2, 3, 5), "NonZero": (0,)}
_INTEGER_OUTPUT = frozenset({"NonZero"})


def _float32_islands(model: onnx.ModelProto, ops: dict[str, tuple[int, ...]]) -> None:
    """Run ``ops`` in float32 inside the float64 graph: their float inputs (positions given) cast
    down, every output cast back up."""
    from onnx import TensorProto, helper

    nodes = []
    for i, node in enumerate(model.graph.node):
        if node.op_type not in ops:
            nodes.append(node)
            continue
        ins = list(node.input)
        for j in ops[node.op_type]:
            if j < len(ins) and ins[j]:
                nodes.append(helper.make_node("Cast", [ins[j]], [f"__f32in{i}_{j}"], to=TensorProto.FLOAT))
                ins[j] = f"__f32in{i}_{j}"
        if node.op_type in _INTEGER_OUTPUT:
            outs = list(node.output)
        else:
            outs = [f"__f32out{i}_{j}" if o else "" for j, o in enumerate(node.output)]
        inner = helper.make_node(node.op_type, ins, outs)
        inner.attribute.extend(node.attribute)
        nodes.append(inner)
        nodes += [helper.make_node("Cast", [o32], [o], to=TensorProto.DOUBLE)
                  for o32, o in zip(outs, node.output) if o and o32 != o]
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _pointwise_convs_as_matmul(model: onnx.ModelProto) -> None:
    """Rewrite each 1x1 Conv (stride 1, no padding, one group) as Transpose, MatMul, Add,
    Transpose: the same function, and one onnxruntime runs in float64 (its CPU Conv is float32)."""
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    nodes = []
    for i, node in enumerate(model.graph.node):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        w = inits.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        pointwise = (w is not None and all(d == 1 for d in w.dims[2:]) and attrs.get("group", 1) == 1
                     and all(s == 1 for s in attrs.get("strides", [1])) and not any(attrs.get("pads", [0]))
                     and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"))
        if not pointwise:
            nodes.append(node)
            continue
        rank = len(w.dims)
        weight = numpy_helper.to_array(w).reshape(w.dims[0], w.dims[1]).T.copy()
        tag = f"__pw{i}"
        model.graph.initializer.append(numpy_helper.from_array(weight, tag + "_w"))
        last = [0] + list(range(2, rank)) + [1]
        back = [0, rank - 1] + list(range(1, rank - 1))
        nodes.append(helper.make_node("Transpose", [node.input[0]], [tag + "_t"], perm=last))
        out = tag + "_mm"
        nodes.append(helper.make_node("MatMul", [tag + "_t", tag + "_w"], [out]))
        if len(node.input) > 2 and node.input[2]:
            nodes.append(helper.make_node("Add", [out, node.input[2]], [tag + "_b"]))
            out = tag + "_b"
        nodes.append(helper.make_node("Transpose", [out], [node.output[0]], perm=back))
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def frozen_neighbours(model: onnx.ModelProto, feed: dict[str, np.ndarray]
                      ) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The graph with every TopK's indices turned into a graph input, and their values for ``feed``:
    a k-nearest-neighbour graph with its neighbour selection held fixed, which is the function
    the backward engine differentiates (a perturbation that switches neighbours is a jump)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from hepaudit.model.graph import with_extra_outputs

    names = [n.output[1] for n in model.graph.node if n.op_type == "TopK" and len(n.output) > 1 and n.output[1]]
    if not names:
        return model, {}
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(with_extra_outputs(model, names).SerializeToString(), sess_options=opts,
                                   providers=["CPUExecutionProvider"])
    values = dict(zip(names, session.run(names, feed)))
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for node in copy.graph.node:
        if node.op_type == "TopK" and len(node.output) > 1 and node.output[1] in values:
            node.output[1] = node.output[1] + "__unused"
    for name in names:
        copy.graph.input.append(helper.make_tensor_value_info(name, TensorProto.INT64, list(values[name].shape)))
    return copy, values
