"""``--force`` that cannot lose data: the report is staged beside ``--out`` and published whole.

Real CLI runs in subprocesses: a failing run, Ctrl-C (SIGINT) and SIGTERM in the middle of a
``--force`` run each leave the earlier report byte for byte and no staging folder; only a
report's own files are ever replaced; an ``--out`` holding the audit's inputs is refused.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from builders import make_flat_jets, write_jets  # noqa: E402
from conftest import AuditSetup  # noqa: E402
from test_cli_errors import assert_clean_error  # noqa: E402

pytestmark = pytest.mark.slow  # real signals and small disks: `pytest -m "not slow"` leaves it out

REPO = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def staging_left(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".hepaudit-" in p.name]


def test_a_failing_force_run_keeps_the_earlier_report(setup: AuditSetup) -> None:
    assert setup.audit().returncode == 0
    before = snapshot(setup.dir / "out")
    jets = make_flat_jets(400, 4, seed=4)
    jets["f0"] = np.full(400, np.nan, np.float32)
    write_jets(setup.dir / "nan.root", jets)
    doc = setup.doc()
    doc["data"]["files"] = ["nan.root"]  # fails while running: every jet has a NaN input
    assert_clean_error(setup.audit("--force", doc=doc), 1, "NaN or inf")
    assert snapshot(setup.dir / "out") == before
    assert staging_left(setup.dir) == []


def test_force_replaces_only_a_reports_own_files(setup: AuditSetup) -> None:
    out = setup.dir / "out"
    assert setup.audit().returncode == 0
    (out / "notes.txt").write_text("my own notes")
    (out / "ood_autoencoder.onnx").write_bytes(b"stale: an earlier audit's fitted autoencoder")
    first = json.loads((out / "report.json").read_text())["created"]
    time.sleep(1.1)
    again = setup.audit("--force")
    assert again.returncode == 0, again.stderr
    assert (out / "notes.txt").read_text() == "my own notes"
    assert not (out / "ood_autoencoder.onnx").exists()  # an earlier report's file, not produced now
    report = json.loads((out / "report.json").read_text())
    assert report["created"] != first
    assert {"report.json", "report.html", "per_jet.root", "figures", "notes.txt"} == {p.name for p in out.iterdir()}
    assert staging_left(setup.dir) == []


def test_an_out_holding_the_audits_inputs_is_refused(setup: AuditSetup) -> None:
    out = setup.dir / "out"
    assert setup.audit().returncode == 0
    (out / "data").mkdir()
    write_jets(out / "data" / "jets.root", dict(setup.jets))
    doc = setup.doc()
    doc["data"]["files"] = ["out/data/jets.root"]
    before = snapshot(out)
    assert_clean_error(setup.audit("--force", doc=doc), 2, "holds the audit's own input", "jets.root")
    assert snapshot(out) == before


def test_an_out_whose_parent_is_a_file(setup: AuditSetup) -> None:
    (setup.dir / "afile").write_text("x")
    result = subprocess.run([sys.executable, "-m", "hepaudit.cli", "audit", setup.write(), "--out",
                             setup.dir / "afile" / "out", "-q"], capture_output=True, text=True, cwd=setup.dir)
    assert_clean_error(result, 2, "afile", "not a folder")


def slow_audit(tmp: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    """The bundled TopoDNN audit with SHAP and LRP on every jet: several seconds of work."""
    config = tmp / "slow.toml"
    text = (REPO / "examples" / "audit_topodnn.toml").read_text()
    text = text.replace('path = "models/', f'path = "{REPO}/examples/models/').replace(
        'files = ["data/', f'files = ["{REPO}/examples/data/')
    # the demo's data and inputs, with explainers of its own (a short first run need not pass the demo's gate)
    text = text[:text.index("[explainers.")] + ("[explainers.dauc]\ngroups = true\n[explainers.shap]\njets = 200\n"
                                                  "samples = 4096\n[explainers.mad]\n[explainers.lrp]\n"
                                                  "[explainers.sanity]\n")
    config.write_text(text)
    return subprocess.Popen([sys.executable, "-m", "hepaudit.cli", "audit", str(config), "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["sigint", "sigterm"])
def test_a_signal_during_force_keeps_the_earlier_report(tmp_path: Path, sig: signal.Signals, code: int) -> None:
    out = tmp_path / "report"
    first = slow_audit(tmp_path, out, "--max-jets", "300", "--explainer", "dauc", "-q")
    assert first.wait(timeout=120) == 0, first.stderr.read() if first.stderr else ""
    before = snapshot(out)
    run = slow_audit(tmp_path, out, "--force", "-q")
    # the staging folder exists from the end of the plan until the report is published: while it is
    # there the run is in the middle of its work (SHAP on 400 jets takes seconds of it)
    while not staging_left(tmp_path) and run.poll() is None:
        time.sleep(0.05)
    assert run.poll() is None, "the run ended before it could be interrupted"
    run.send_signal(sig)
    _, err = run.communicate(timeout=60)
    assert run.returncode == code, err
    assert "Traceback" not in err and "no report written" in err
    assert snapshot(out) == before
    assert staging_left(tmp_path) == []


def test_a_full_disk_keeps_the_earlier_report(setup: AuditSetup, tmp_path: Path) -> None:
    """A real 400 kB tmpfs: the first report fits, the larger second one does not."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        out = mnt / "out"
        first = subprocess.run([sys.executable, "-m", "hepaudit.cli", "audit", setup.write(), "--out", out, "-q",
                                "--explainer", "dauc"], capture_output=True, text=True, cwd=setup.dir)
        assert first.returncode == 0, first.stderr
        before = snapshot(out)
        doc = setup.doc()
        doc["explainers"] = {"dauc": {}, "mad": {}, "lrp": {}, "gradient": {"per_jet": True}, "nap": {}}
        full = subprocess.run([sys.executable, "-m", "hepaudit.cli", "audit", setup.write(doc, "big.toml"), "--out",
                               out, "-q", "--force"], capture_output=True, text=True, cwd=setup.dir)
        assert_clean_error(full, 1, str(out), "No space left on device", "earlier report there is untouched")
        assert snapshot(out) == before
        assert staging_left(mnt) == []
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_a_read_only_output_folder_keeps_the_earlier_report(setup: AuditSetup, tmp_path: Path) -> None:
    """A real tmpfs remounted read-only after the first report."""
    mnt = tmp_path / "ro-disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        out = mnt / "out"
        first = subprocess.run([sys.executable, "-m", "hepaudit.cli", "audit", setup.write(), "--out", out, "-q"],
                               capture_output=True, text=True, cwd=setup.dir)
        assert first.returncode == 0, first.stderr
        before = snapshot(out)
        assert subprocess.run(["mount", "-o", "remount,ro", str(mnt)]).returncode == 0
        again = subprocess.run([sys.executable, "-m", "hepaudit.cli", "audit", setup.write(), "--out", out, "-q",
                                "--force"], capture_output=True, text=True, cwd=setup.dir)
        assert_clean_error(again, 1, str(out), "cannot write there", "Read-only file system")
        assert snapshot(out) == before
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
