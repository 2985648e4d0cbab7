"""An audit in a real Jupyter kernel (nbclient runs the cells, as a notebook would): progress
bars in the cell, the report's warnings as Python warnings, the report shown as a compact HTML
table (issue 23)."""

from __future__ import annotations

import json

import pytest
from conftest import AuditSetup

nbformat = pytest.importorskip("nbformat", reason="nbformat/nbclient/ipykernel not installed (the test extra has them)")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")


@pytest.mark.slow
def test_audit_in_a_jupyter_kernel(setup: AuditSetup) -> None:
    doc = setup.doc()
    doc["explainers"] = {"dauc": {}, "ood_ae": {}}  # ood_ae without a reference: a report warning
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(f"import hepaudit\nreport = hepaudit.audit({json.dumps(doc)}, out=None)"),
        nbformat.v4.new_code_cell("report"),
        nbformat.v4.new_code_cell("print(sorted(report.per_jet)[:3], len(report.per_jet['score']))"),
    ])
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(setup.dir)}})
    client.execute()
    run, shown, per_jet = (cell.outputs for cell in notebook.cells)
    text = "".join(o.get("text", "") for o in run if o.output_type == "stream")
    assert "HepauditWarning" in text and "no reference sample" in text
    widgets = [o for o in run if o.output_type == "display_data" and
               "application/vnd.jupyter.widget-view+json" in o.data]
    assert widgets or "%|" in text, run  # tqdm.auto: a widget, or text bars without ipywidgets
    html = next(o.data["text/html"] for o in shown if "text/html" in o.data)
    assert "<table>" in html and "dauc" in html and len(html) < 8000
    assert "'entry'" in per_jet[0]["text"] and "400" in per_jet[0]["text"]
