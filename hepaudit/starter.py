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

from hepaudit.errors import DataError
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


def starter_config(model_path: Path, data_path: Path, tree: str | None = None) -> tuple[str, list[str]]:
    model = load_model(model_path)
    info = describe_model(model, model_path)
    notes: list[str] = []
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
        branches = tree_branches(trees[tree])
    flat = [b["name"] for b in branches if not b["jagged"]]
    jagged = [b["name"] for b in branches if b["jagged"]]
    label = next((b for b in _LABELS if b in flat), None)
    if label is None:
        notes.append("no label branch found (1 = signal, 0 = background): set data.label, or dauc will be skipped")
    momentum = _find_momentum(jagged)

    out_dir = Path(os.path.commonpath([model_path.resolve().parent, data_path.resolve().parent]))
    lines = ["# hepaudit starter config, written by `hepaudit init`: check every line marked CHECK.", "",
             "[model]", f"path = {_toml_value(os.path.relpath(model_path.resolve(), out_dir))}"]
    out = info.outputs[0]
    n_cols = out.shape[-1] if len(out.shape) >= 2 and isinstance(out.shape[-1], int) else 1
    if n_cols > 1:
        lines.append(f"score = {n_cols - 1}   # CHECK: the output has {n_cols} columns; which one is the signal?")
        notes.append(f"output {out.name!r} has {n_cols} columns: set model.score (a column, or a class-sum)")
    lines += ["", "[data]", f"files = [{_toml_value(os.path.relpath(data_path.resolve(), out_dir))}]",
              f"tree = {_toml_value(tree)}"]
    lines.append(f"label = {_toml_value(label)}" if label
                 else "# label = \"is_signal\"   # CHECK: no label branch found")
    lines.append("# step_size = 100000")
    for tensor in info.inputs:
        lines += ["", "[[inputs]]", f"name = {_toml_value(tensor.name)}"]
        rank = len(tensor.shape)
        width = tensor.shape[-1] if isinstance(tensor.shape[-1], int) else None
        if "mask" in tensor.name.lower():
            lines.append('kind = "mask"')
            continue
        if rank == 2 and momentum and width and width % 3 == 0 and width >= 6:
            lines += ['kind = "constituents"', f"momentum = {_toml_value(momentum)}",
                      'features = ["pt", "eta", "phi"]   # CHECK: the order the model was trained with',
                      f"max_particles = {width // 3}", 'layout = "flat"',
                      '# preprocess = "topodnn"   # CHECK: the recipe the tagger was trained with']
            notes.append(f"input {tensor.name!r}: guessed {width // 3} constituents x (pt, eta, phi), flat; "
                         "check the features and the preprocessing recipe")
        elif rank == 3 and momentum:
            p, f = tensor.shape[1], tensor.shape[2]
            lines += ['kind = "constituents"', f"momentum = {_toml_value(momentum)}",
                      f"features = []   # CHECK: the {f} per-particle features, in model order",
                      f"max_particles = {p}", 'layout = "particles"   # CHECK: or "channels" for (N, F, P)']
            notes.append(f"input {tensor.name!r}: shape {tensor.shape}; name its per-particle features")
        elif rank == 2 and width is not None:
            chosen = [b for b in flat if b != label][:width]
            lines += ['kind = "jet"',
                      f"branches = {_toml_value(chosen)}   # CHECK: the model's {width} inputs, in order"]
            notes.append(f"input {tensor.name!r}: guessed jet branches {chosen}; check them and their order")
        else:
            lines.append('kind = "constituents"   # CHECK: could not guess this input')
            notes.append(f"input {tensor.name!r} with shape {tensor.shape}: could not guess; see the docs")
    if momentum is None and jagged:
        notes.append(f"no constituent four-momentum branches recognised among {', '.join(jagged[:6])}")
    lines += ["", "[explainers.dauc]", "[explainers.mad]", ""]
    return "\n".join(lines), notes
