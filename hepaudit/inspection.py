"""``hepaudit inspect``: what is in an ONNX model or a ROOT file, as text and as a dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hepaudit.errors import DataError, HepauditError
from hepaudit.model.graph import describe_model, find_head, load_model


def inspect_model(path: Path) -> tuple[dict[str, Any], str]:
    model = load_model(path)
    info = describe_model(model, path)
    doc = info.to_dict()
    heads = {o.name: find_head(model, o.name) for o in info.outputs}
    doc["heads"] = {k: (h.op if h else None) for k, h in heads.items()}

    def shape(s: tuple[Any, ...]) -> str:
        return "(" + ", ".join("?" if d is None else str(d) for d in s) + ")"

    lines = [f"{path}: ONNX model, opset {info.opset}, producer {info.producer or '?'}",
             f"  sha256 {info.sha256}", f"  {info.n_parameters:,} parameters, {sum(info.op_counts.values())} nodes"]
    lines.append("  inputs:")
    lines += [f"    {t.name:<20} {shape(t.shape):<20} {t.dtype}" for t in info.inputs]
    lines.append("  outputs:")
    lines += [f"    {t.name:<20} {shape(t.shape):<20} {t.dtype}"
              + (f"  (from {head.op})" if (head := heads[t.name]) else "") for t in info.outputs]
    lines.append("  ops: " + ", ".join(f"{op} {n}" for op, n in info.op_counts.items()))
    return doc, "\n".join(lines)


def tree_branches(tree: Any) -> list[dict[str, Any]]:
    out = []
    for name in tree.keys():
        branch = tree[name]
        typename = branch.typename
        jagged = "[]" in typename or "vector" in typename or "var" in str(getattr(branch.interpretation, "content", ""))
        out.append({"name": name, "type": typename, "jagged": jagged})
    return out


def root_trees(handle: Any) -> dict[str, Any]:
    trees = {}
    for key, classname in handle.classnames().items():
        if classname == "TTree":
            trees[key.split(";")[0]] = handle[key]
    return trees


def inspect_root(path: Path) -> tuple[dict[str, Any], str]:
    from hepaudit.data.reading import open_root

    try:
        handle = open_root(path)
    except Exception as exc:
        detail = str(exc).splitlines()[0][:150] if str(exc) else ""
        raise DataError(f"{path}: not a readable ROOT file ({type(exc).__name__}: {detail})") from None
    with handle:
        trees = root_trees(handle)
        doc: dict[str, Any] = {"path": str(path), "trees": {}}
        lines = [f"{path}: ROOT file with {len(trees)} tree(s)"]
        for name, tree in trees.items():
            branches = tree_branches(tree)
            doc["trees"][name] = {"entries": int(tree.num_entries), "branches": branches}
            lines.append(f"  tree {name!r}: {tree.num_entries:,} entries")
            lines += [f"    {b['name']:<24} {b['type']:<20} {'jagged' if b['jagged'] else ''}" for b in branches]
        others = sorted({k.split(';')[0] for k, c in handle.classnames().items() if c != "TTree"})
        if others:
            lines.append(f"  other objects: {', '.join(others)}")
            doc["other"] = others
    return doc, "\n".join(lines)


def inspect_path(path: Path) -> tuple[dict[str, Any], str]:
    """Dispatch on the file's content: ROOT files start with b"root"; a ``.root`` file that does not
    is reported as a damaged ROOT file; anything else is tried as ONNX."""
    if not path.is_file():
        raise HepauditError(f"{path}: file not found")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic == b"root" or path.suffix.lower() == ".root":
        return inspect_root(path)
    return inspect_model(path)
