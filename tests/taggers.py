"""The real collaboration taggers of ../shared/external-models, each with an audit config.

Shared by tests/test_taggers.py and benchmarks/bench_taggers.py. Each entry says where the
model is and how its inputs are built from one ROOT file: real generator-level jets (the
example Pythia top/QCD sample: four-momenta, charges, PDG ids) plus synthetic detector
variables seeded here (per particle ``syn_a``, ``syn_b``; a secondary-vertex collection
``sv_*`` of 0..4 objects; jet-level ``g0``...``g15``), because no public sample has them. The
numbers a tagger gives on these jets describe the tagger on these inputs, not its performance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot

from builders import write_jets

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
    extra: dict[str, Any] = field(default_factory=dict)

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
         _cms("input_4", {"cpf_px": "px", "cpf_py": "py", "cpf_pz": "pz", "cpf_e": "energy"}, 25, "particles"),
         _cms("input_5", {"npf_px": "px", "npf_py": "py", "npf_pz": "pz", "npf_e": "energy"}, 25, "particles"),
         _cms("input_6", {"sv_px4": "px", "sv_py4": "py", "sv_pz4": "pz", "sv_e4": "energy"}, 5, "particles",
              momentum=SV_MOMENTUM)],
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
    TaggerCase(
        "jetclass_particlenet", "jetclass-ParticleNet-kin/ParticleNet_kin.onnx",
        {"score": {"signal": ["label_Tbqq"], "background": ["label_QCD"]}},
        [{"name": "*", "kind": "cms", "preprocess_json": "jetclass-ParticleNet-kin/preprocess.json",
          "momentum": MOMENTUM,
          "variables": {"part_deta": "deta", "part_dphi": "dphi", "part_pt_log": "log_pt",
                        "part_e_log": "log_energy", "part_logptrel": "log_pt_rel", "part_logerel": "log_energy_rel",
                        "part_deltaR": "dr", "part_mask": "mask"}}],
    ),
    TaggerCase(
        "jetclass_particlenet_dynamo", "jetclass-ParticleNet-kin/ParticleNet_kin_dynamo.onnx",
        {"score": {"signal": ["label_Tbqq"], "background": ["label_QCD"]}},
        [{"name": "*", "kind": "cms", "preprocess_json": "jetclass-ParticleNet-kin/preprocess.json",
          "momentum": MOMENTUM,
          "variables": {"part_deta": "deta", "part_dphi": "dphi", "part_pt_log": "log_pt",
                        "part_e_log": "log_energy", "part_logptrel": "log_pt_rel", "part_logerel": "log_energy_rel",
                        "part_deltaR": "dr", "part_mask": "mask"}}],
    ),
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
