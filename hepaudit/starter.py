"""``hepaudit init``: a starter audit config guessed from a model and a ROOT file.

It reads the model's inputs and the tree's branches, guesses the label branch, the
constituent four-momentum branches and each input's kind and layout, and returns the
TOML text plus notes on everything it could not guess (printed on stderr), so the user
knows exactly what to check before running the audit.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import uproot

from hepaudit.data.cms import Preprocess, read_preprocess_json
from hepaudit.errors import ConfigError, DataError
from hepaudit.inspection import root_trees, tree_branches
from hepaudit.model.graph import describe_model, load_model

_LABELS = ("is_signal", "label", "is_sig", "signal", "truth_label", "y", "target", "isSignal")
_CART = {"px": ("px",), "py": ("py",), "pz": ("pz",), "energy": ("energy", "e", "E")}
_POLAR = {"pt": ("pt",), "eta": ("eta",), "phi": ("phi",), "mass": ("mass", "m")}


def _find_momentum(jagged: list[str]) -> dict[str, str] | None:
    for scheme in (_CART, _POLAR):
        by_prefix: dict[str, dict[str, str]] = {}
        for name in jagged:
            for key, suffixes in scheme.items():
                for suffix in suffixes:
                    m = re.fullmatch(rf"(.*?)[_.]?{suffix}", name)
                    if m:
                        by_prefix.setdefault(m.group(1), {}).setdefault(key, name)
        for found in by_prefix.values():
            if len(found) == len(scheme):
                return found
    return None


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return str(value)


#: CMS variable-name stems (the part after "pfcand_") -> the derived feature hepaudit computes
_CMS_DERIVED = {
    "pt_log": "log_pt", "pt_log_nopuppi": "log_pt", "logpt": "log_pt", "e_log": "log_energy",
    "e_log_nopuppi": "log_energy", "loge": "log_energy", "ptrel_log": "log_pt_rel", "erel_log": "log_energy_rel",
    "etarel": "etarel", "phirel": "phirel", "deltar": "dr", "abseta": "abs_eta", "mask": "mask",
    # weaver's names (JetClass, HLT ParticleNet): part_deta, jet_pfcand_energy_log, part_logptrel, ...
    "deta": "deta", "dphi": "dphi", "energy_log": "log_energy", "logptrel": "log_pt_rel",
    "logerel": "log_energy_rel", "ptrel": "pt_rel", "erel": "energy_rel", "eta": "eta", "phi": "phi",
}
#: the symbolic particle axis of a model input gets this padded length, marked CHECK
DEFAULT_LENGTH = 50
_CMS_PID = {"ismu": "is_muon", "isel": "is_electron", "ischargedhad": "is_charged_hadron", "isgamma": "is_photon",
            "isneutralhad": "is_neutral_hadron"}
_PID_BRANCHES = ("pid", "pdgid", "pdg_id", "pdg", "id")


def _stem(name: str) -> str:
    return name.split("_", 1)[1].lower() if "_" in name else name.lower()


def _stems(name: str) -> list[str]:
    """Every tail of a variable name after an underscore, longest first
    (``jet_pfcand_pt_log`` -> ``pfcand_pt_log``, ``pt_log``, ``log``)."""
    parts = name.lower().split("_")
    return ["_".join(parts[i:]) for i in range(1, len(parts))] or [name.lower()]


def cms_variable_table(pre: Preprocess, jagged: list[str], pid: str | None) -> tuple[dict[str, str], list[str]]:
    """Propose a source for every variable of a preprocess.json: a derived feature, a PDG-id flag
    or a jagged branch with the same stem (``pfcand_charge`` <- ``part_charge``); and the
    variables nothing was found for. Secondary-vertex variables (``sv_*``) only match a branch
    of exactly their name: a PF-candidate quantity must not stand in for a vertex's."""
    stems = {_stem(b): b for b in jagged}
    table: dict[str, str] = {}
    missing: list[str] = []
    for name in pre.input_names:
        for var in pre.inputs[name].var_names:
            if var in table or var in missing:
                continue
            tails = _stems(var)
            derived = next((_CMS_DERIVED[t] for t in tails if t in _CMS_DERIVED), None)
            flag = next((_CMS_PID[t] for t in tails if t in _CMS_PID), None)
            if var.lower().startswith(("sv_", "jet_sv_")):
                source = var if var in jagged else None
            elif derived is not None:
                source = derived
            elif flag is not None and pid:
                source = flag
            else:
                source = next((stems[t] for t in tails if t in stems), None)
            if source is None:
                missing.append(var)
            else:
                table[var] = source
    return table, missing


def _class_sum_guess(classes: tuple[str, ...]) -> tuple[list[str], list[str]] | None:
    """CMS's TvsQCD: (probTbcq + probTbqq) / (that + every probQCD*), when the classes have them."""
    sig = [c for c in classes if c in ("probTbcq", "probTbqq")]
    bkg = [c for c in classes if c.startswith("probQCD")]
    return (sig, bkg) if sig and bkg else None


def _branches_of(data_path: Path, tree: str | None, notes: list[str]) -> tuple[str, list[dict[str, Any]]]:
    """The tree to audit (the largest, unless ``tree`` is given) and its branches."""
    try:
        handle = uproot.open(data_path)
    except Exception as exc:
        raise DataError(f"{data_path}: not a readable ROOT file ({type(exc).__name__})") from None
    with handle:
        trees = root_trees(handle)
        if not trees:
            raise DataError(f"{data_path}: no TTree in the file")
        if tree is None:
            tree = max(trees, key=lambda t: trees[t].num_entries)
            if len(trees) > 1:
                notes.append(f"several trees; chose {tree!r} (the largest): pass --tree to choose")
        elif tree not in trees:
            raise DataError(f"{data_path}: no tree {tree!r}; trees: {', '.join(trees)}")
        return tree, tree_branches(trees[tree])


def _score_lines(info: Any, pre: Preprocess | None, notes: list[str]) -> list[str]:
    """``model.score`` for a model with several output columns."""
    out = info.outputs[0]
    n_cols = out.shape[-1] if len(out.shape) >= 2 and isinstance(out.shape[-1], int) else 1
    guess = _class_sum_guess(pre.flav_names) if pre and pre.flav_names else None
    if n_cols > 1 and guess:
        notes.append("model.score: proposed CMS's TvsQCD class sum; change it for another discriminant")
        return ["# classes come from flav_names in preprocess.json; CMS's TvsQCD discriminant:",
                f"score = {{ signal = {_toml_value(guess[0])}, background = {_toml_value(guess[1])} }}   # CHECK"]
    if n_cols > 1:
        notes.append(f"output {out.name!r} has {n_cols} columns: set model.score (a column, or a class-sum)")
        return [f"score = {n_cols - 1}   # CHECK: the output has {n_cols} columns; which one is the signal?"]
    return []


def _cms_lines(pre: Preprocess, json_path: Path, out_dir: Path, jagged: list[str], momentum: dict[str, str] | None,
               notes: list[str]) -> list[str]:
    """One ``kind = "cms"`` table for every input preprocess.json lists, with its variable table."""
    pid = next((b for b in jagged for suffix in _PID_BRANCHES if re.fullmatch(rf".*[_.]{suffix}", b, re.I)), None)
    table, missing = cms_variable_table(pre, jagged, pid)
    lines = ["", "[[inputs]]", 'name = "*"   # every input preprocess.json lists', 'kind = "cms"',
             f"preprocess_json = {_toml_value(os.path.relpath(json_path.resolve(), out_dir))}"]
    if momentum:
        lines.append(f"momentum = {_toml_value(momentum)}")
    if pid:
        lines.append(f"pid = {_toml_value(pid)}   # PDG ids, for the particle-type flags")
    lines += ["", "[inputs.variables]   # CHECK: what each variable of the json is made of"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    if missing:
        lines.append("# not found in the data: set to their pad value, with a warning in the report")
        lines += [f"# {k} = \"pad\"" for k in missing]
        notes.append(f"preprocess.json: {len(missing)} variables not found in the data (set to their pad "
                     f"value): {', '.join(missing)}")
    return lines


def _input_lines(tensor: Any, flat: list[str], label: str | None, momentum: dict[str, str] | None,
                 notes: list[str], alone: bool = True) -> list[str]:
    """A guessed ``[[inputs]]`` table for one ONNX input. A 2-D input is a flat list of
    constituents only when it is the model's only input (TopoDNN); beside other inputs it is
    the jet-level globals (DeepJet's input_1)."""
    lines = ["", "[[inputs]]", f"name = {_toml_value(tensor.name)}"]
    rank = len(tensor.shape)
    width = tensor.shape[-1] if isinstance(tensor.shape[-1], int) else None
    if "mask" in tensor.name.lower():
        return lines + ['kind = "mask"']
    if rank == 2 and momentum and width and width % 3 == 0 and width >= 6 and alone:
        lines += ['kind = "constituents"', f"momentum = {_toml_value(momentum)}",
                  'features = ["pt", "eta", "phi"]   # CHECK: the order the model was trained with',
                  f"max_particles = {width // 3}", 'layout = "flat"',
                  # TopoDNN's own shape: its recipe (centred, rotated, flipped, scaled), which a
                  # tagger trained on it needs; without it the audit runs at AUC ~0.5
                  ('preprocess = "topodnn"   # CHECK: the recipe the tagger was trained with' if width == 90
                   else '# preprocess = "topodnn"   # CHECK: the recipe the tagger was trained with')]
        notes.append(f"input {tensor.name!r}: guessed {width // 3} constituents x (pt, eta, phi), flat; "
                     "check the features and the preprocessing recipe")
    elif rank == 3 and momentum:
        p, f = tensor.shape[1], tensor.shape[2]
        length = p if isinstance(p, int) else DEFAULT_LENGTH
        why = "" if isinstance(p, int) else f"  # CHECK: the model's axis is symbolic ({p}): choose the padded length"
        lines += ['kind = "constituents"', f"momentum = {_toml_value(momentum)}",
                  f"features = []   # CHECK: the {f} per-particle features, in model order",
                  f"max_particles = {length}{why}", 'layout = "particles"   # CHECK: or "channels" for (N, F, P)']
        notes.append(f"input {tensor.name!r}: shape {tensor.shape}; name its per-particle features")
    elif rank == 2 and width is not None:
        chosen = [b for b in flat if b != label][:width]
        lines += ['kind = "jet"', f"branches = {_toml_value(chosen)}   # CHECK: the model's {width} inputs, in order"]
        notes.append(f"input {tensor.name!r}: guessed jet branches {chosen}; check them and their order")
    else:
        lines.append('kind = "constituents"   # CHECK: could not guess this input')
        notes.append(f"input {tensor.name!r} with shape {tensor.shape}: could not guess; see the docs")
    return lines


def starter_config(model_path: Path, data_path: Path, tree: str | None = None, base: Path | None = None
                   ) -> tuple[str, list[str]]:
    """A starter config for ``model_path`` on ``data_path``, and notes on what it could not guess.

    Paths in it are relative to ``base``, the folder the config will be saved in (a config's
    paths are read from its own folder); default: the current folder."""
    info = describe_model(load_model(model_path), model_path)
    notes: list[str] = []
    tree, branches = _branches_of(data_path, tree, notes)
    flat = [b["name"] for b in branches if not b["jagged"]]
    jagged = [b["name"] for b in branches if b["jagged"]]
    label = next((b for b in _LABELS if b in flat), None)
    if label is None:
        notes.append("no label branch found (1 = signal, 0 = background): set data.label, or dauc will be skipped")
    momentum = _find_momentum(jagged)
    pre: Preprocess | None = None
    json_path = model_path.parent / "preprocess.json"
    if json_path.exists():
        try:
            pre = read_preprocess_json(json_path)
        except ConfigError as exc:
            notes.append(f"found {json_path} but cannot use it: {exc}")

    out_dir = (base or Path.cwd()).resolve()
    lines = ["# hepaudit starter config, written by `hepaudit init`: check every line marked CHECK.",
             f"# Paths are relative to the folder this config is saved in: {out_dir}", "",
             "[model]", f"path = {_toml_value(os.path.relpath(model_path.resolve(), out_dir))}"]
    lines += _score_lines(info, pre, notes)
    lines += ["", "[data]", f"files = [{_toml_value(os.path.relpath(data_path.resolve(), out_dir))}]",
              f"tree = {_toml_value(tree)}"]
    lines.append(f"label = {_toml_value(label)}" if label
                 else "# label = \"is_signal\"   # CHECK: no label branch found")
    lines.append("# step_size = 100000")
    covered: set[str] = set()
    if pre is not None:
        covered = set(pre.input_names)
        lines += _cms_lines(pre, json_path, out_dir, jagged, momentum, notes)
    for tensor in info.inputs:
        if tensor.name not in covered:
            lines += _input_lines(tensor, flat, label, momentum, notes, alone=len(info.inputs) == 1)
    if momentum is None and jagged:
        notes.append(f"no constituent four-momentum branches recognised among {', '.join(jagged[:6])}")
    if pre is not None:  # thousands of features: occlude groups (per variable, per input), not each one
        occlusion = ['features = false', 'groups = ["feature", "input"]']
        lines += ["", "[explainers.dauc]", *occlusion, "[explainers.mad]", *occlusion, ""]
    else:
        lines += ["", "[explainers.dauc]", "[explainers.mad]", ""]
    return "\n".join(lines), notes
