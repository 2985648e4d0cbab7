"""Finding one's way from the terminal (issue 23): `hepaudit explainers [NAME]`, the explainers
in `audit --help`, docs/config.md generated from the code, and the summary's headline numbers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from conftest import AuditSetup, run_cli

from hepaudit.config_docs import config_page, option_docs
from hepaudit.explainers.mad import MadOptions

REPO = Path(__file__).resolve().parents[1]


@dataclass
class _Options:
    size: int = 3  # how many
    # what it is made of,
    # over two lines
    kind: Literal["a", "b"] = "a"
    names: list[str] = field(default_factory=lambda: ["x"])
    needed: str = ""


def test_option_docs_read_types_defaults_and_comments() -> None:
    docs = {d.key: d for d in option_docs(_Options)}
    assert list(docs) == ["size", "kind", "names", "needed"]
    assert (docs["size"].type, docs["size"].default, docs["size"].help) == ("an integer", "3", "how many")
    assert docs["kind"].help == "what it is made of, over two lines" and docs["kind"].type == "'a' or 'b'"
    assert docs["names"].default == '["x"]' and docs["names"].type == "a list of strings" and not docs["names"].help


def test_config_page_is_generated_from_the_code() -> None:
    """docs/config.md is what `python -m hepaudit.config_docs` writes today: regenerate it when
    a key changes (the message says how)."""
    page = config_page()
    assert (REPO / "docs" / "config.md").read_text() == page, \
        "docs/config.md is stale: python -m hepaudit.config_docs > docs/config.md"
    for key in ("`cache_mb`", "`prefetch`", "`bootstrap`", "`step_size`", "`batch_size`", "[explainers.shap]",
                "[explainers.sanity]", "`nsubjettiness_jets`"):
        assert key in page, key


def test_explainers_command_lists_every_explainer_and_one_explainers_options() -> None:
    listed = run_cli("explainers")
    assert listed.returncode == 0, listed.stderr
    for name in ("dauc", "mad", "shap", "lrp", "gradient", "nap", "latent", "ood_ae", "ood_ensemble", "calibration",
                 "sanity"):
        assert any(line.startswith(name + " ") for line in listed.stdout.splitlines()), name
    one = run_cli("explainers", "mad")
    assert one.returncode == 0, one.stderr
    assert "Mean absolute differential relevance" in one.stdout
    for option in option_docs(MadOptions):  # every option, with its default from the dataclass
        assert f"  {option.key} = {option.default}" in one.stdout, option.key
    assert 'iqr_clip = false' in one.stdout and "1.5 IQR" in one.stdout
    as_json = json.loads(run_cli("explainers", "shap", "--json").stdout)
    assert as_json["name"] == "shap" and {o["key"] for o in as_json["options"]} >= {"background", "jets", "l1_reg"}
    wrong = run_cli("explainers", "mda")
    assert wrong.returncode == 2 and "mad" in wrong.stderr and "Traceback" not in wrong.stderr
    helped = run_cli("audit", "--help")
    assert helped.returncode == 0 and "Explainers:" in helped.stdout and "ood_ensemble" in helped.stdout


def test_summary_gives_the_headline_numbers(setup: AuditSetup) -> None:
    doc = setup.doc()
    doc["explainers"] = {"dauc": {}, "calibration": {}, "ood_ae": {}, "nap": {}}
    doc["reference"] = {"files": ["jets.root"], "tree": "jets", "label": "is_signal"}
    done = run_cli("audit", setup.write(doc), "--out", setup.dir / "out", cwd=setup.dir)
    assert done.returncode == 0, done.stderr
    report = json.loads((setup.dir / "out" / "report.json").read_text())
    fields = report["explainers"]  # each explainer's fields sit in its entry
    text = done.stderr
    assert f"; AUC {report['sections']['performance']['auc']:.4f} [" in text.splitlines()[0]
    assert f"AUC {fields['dauc']['baseline_auc']:.4f}" in text
    assert f"ECE {fields['calibration']['ece']:.4f}" in text
    assert f"flagged {fields['ood_ae']['flagged_fraction']:.1%} (reference " in text
    assert f"sparsity {fields['nap']['sparsity']:.2f}" in text
