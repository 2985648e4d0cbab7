"""Every config key with its type, default and meaning, read from the dataclasses themselves.

The audit config's sections and each explainer's ``Options`` are dataclasses; a field's
meaning is the comment on its line (and comment lines right below it), so the code stays the
one place a key is described. :func:`option_docs` serves ``hepaudit explainers NAME``, and
:func:`config_page` writes docs/config.md (``python -m hepaudit.config_docs > docs/config.md``;
a test keeps the page in step with the code).
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import tokenize
from dataclasses import dataclass
from typing import Any, get_type_hints

from hepaudit.options import _type_name

_FIELD = re.compile(r"^\s+([A-Za-z_]\w*)\s*:")


@dataclass(frozen=True)
class OptionDoc:
    """One key: its name, type in words, default as TOML would write it, and meaning."""

    key: str
    type: str
    default: str
    help: str


def _comments(cls: type) -> dict[str, str]:
    """Field name -> the comment on its line, else the comment lines right above it."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # no source (a compiled plugin): no descriptions
        return {}
    lines = source.splitlines()
    comments: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0] - 1] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError):
        return {}
    out: dict[str, str] = {}
    for i, line in enumerate(lines):
        match = _FIELD.match(line)
        if not match or line.strip().startswith("#"):
            continue
        if i in comments:
            out.setdefault(match.group(1), comments[i])
            continue
        above: list[str] = []
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#") and j in comments:
            above.insert(0, comments[j])
            j -= 1
        if above:
            out.setdefault(match.group(1), " ".join(above))
    return out


_LIST_OF = re.compile(r"a list of an? (\w+)")


def _words(type_name: str) -> str:
    """'a list of a string' -> 'a list of strings' (options' own words are for one value);
    a bare ``dict`` is a table."""
    return "a table" if type_name == "dict" else _LIST_OF.sub(lambda m: f"a list of {m.group(1)}s", type_name)


def _toml(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}" if value else "{}"
    if dataclasses.is_dataclass(value):
        return "(a table)"
    return str(value)


def option_docs(cls: type) -> list[OptionDoc]:
    """The keys of a config dataclass (an explainer's Options, a config section), in order."""
    if not dataclasses.is_dataclass(cls):
        return []
    hints = get_type_hints(cls)
    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # a subclass's comment on a field wins
        if dataclasses.is_dataclass(klass):
            helps.update(_comments(klass))
    out = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name.startswith("_"):
            continue
        if f.default is not dataclasses.MISSING:
            default = _toml(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = _toml(f.default_factory())
        else:
            default = "required"
        out.append(OptionDoc(f.name, _words(_type_name(hints.get(f.name, Any))), default, helps.get(f.name, "")))
    return out


def _table(docs: list[OptionDoc]) -> list[str]:
    if not docs:
        return ["No options.", ""]
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for d in docs:
        cells = (f"`{d.key}`", d.type, f"`{d.default}`" if d.default not in ("required",) else "required",
                 d.help)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return rows + [""]


def config_page() -> str:
    """docs/config.md: every section of the audit config, then every built-in explainer's options."""
    from hepaudit import config as c
    from hepaudit.plugins import PluginHost, _details

    sections: list[tuple[str, type, str]] = [
        ("[model]", c.ModelConfig, "The ONNX tagger and how its output is read."),
        ("[data]", c.SampleConfig, "The audited ROOT files."),
        ("[reference]", c.SampleConfig, "Optional: a reference sample (e.g. the training sample), "
                                        "the same keys as `[data]`."),
        ("[[inputs]]", c.InputConfig, "One table per ONNX input: how it is built from the tree."),
        ("momentum = {...}", c.MomentumBranches, "Inside an `[[inputs]]` table: the constituent "
                                                 "four-momentum branches, Cartesian or (pT, η, φ, m)."),
        ("[execution]", c.ExecutionConfig, "How the audit runs."),
        ("[report]", c.ReportConfig, "The report's figures: their style and file formats."),
        ("[per_jet]", c.PerJetConfig, "What per_jet.root holds beside each explainer's per-jet columns."),
        ('[gates] "EXPLAINER.FIELD" = {...}', c.GateRule, "Optional: make `hepaudit audit` exit 1 when a "
                                                           "report value leaves these bounds (for CI)."),
    ]
    lines = ["# Every config key", "",
             "Generated from the code by `python -m hepaudit.config_docs > docs/config.md`; a test fails when",
             "this page and the code differ. The README and docs/contract.md show whole configs;",
             "`hepaudit explainers NAME` prints one explainer's options in a terminal.", ""]
    for title, cls, text in sections:
        lines += [f"## `{title}`", "", text, ""] + _table(option_docs(cls))
    registry = PluginHost(entry_points=False).explainers()  # built-ins only: not what else is installed
    lines += ["## Explainers", "",
              "Each `[explainers.NAME]` table turns an explainer on; its keys are the options below.", ""]
    for name in sorted(registry.classes):
        cls = registry.classes[name]
        lines += [f"### `[explainers.{name}]`", "", _details(cls)["description"], ""]
        lines += _table(option_docs(cls.Options))
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(config_page(), end="")
