"""The README's main command, end to end (issue 23): the full audit of the bundled TopoDNN, every
built-in explainer on, each reporting ok, through the real CLI in a subprocess."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import uproot

from hepaudit.plugins import PluginHost

REPO = Path(__file__).resolve().parents[1]


def demo_audit_arguments() -> list[str]:
    """The ``hepaudit audit ...`` part of the README's demo command (between its ci markers)."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"ci:demo-command:start -->\s*```bash\n(.*?)\n```", text, re.S)
    assert block, "README.md has no demo command between the ci:demo-command markers"
    command = block.group(1).split("&&")[-1].strip()
    words = shlex.split(command)
    assert words[:2] == ["hepaudit", "audit"], command
    return words[2:]


@pytest.mark.slow
@pytest.mark.skipif(not (REPO / "examples" / "models" / "topodnn.onnx").exists(), reason="example model absent")
def test_readme_main_command_runs_every_builtin_explainer(tmp_path: Path) -> None:
    args = demo_audit_arguments()
    out = tmp_path / "hepaudit-report"
    args[args.index("--out") + 1] = str(out)  # the README writes into the checkout; the test does not
    done = subprocess.run([sys.executable, "-m", "hepaudit.cli", "audit", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    builtin = set(PluginHost(entry_points=False).explainers().classes)
    assert set(report["explainers"]) == builtin, "the demo should show every built-in explainer"
    status = {name: (e["status"], e.get("error")) for name, e in report["explainers"].items()}
    assert all(s == "ok" for s, _ in status.values()), status
    assert report["gates"] and all(g["passed"] for g in report["gates"]), report["gates"]
    assert (out / "report.html").exists() and (out / "per_jet.root").exists()
    assert "AUC 0.9" in done.stderr.splitlines()[0]  # the summary's headline
    # per-particle attributions as (jets, particles, features) array branches: lrp_x[30][3]
    tree = uproot.open(out / "per_jet.root")["hepaudit"].arrays(["lrp_x"], library="np")
    assert tree["lrp_x"].shape == (5000, 30, 3)
    ranked = {s["feature"]: s["score"] for s in report["explainers"]["lrp"]["feature_importance"]}
    for (p, f), feature in (((0, 0), "pt_0"), ((1, 2), "phi_1"), ((29, 1), "eta_29")):
        assert np.abs(tree["lrp_x"][:, p, f]).mean() == pytest.approx(ranked[feature], rel=1e-4)
