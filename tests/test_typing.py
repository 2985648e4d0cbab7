"""The package type-checks: mypy over hepaudit/ (settings in pyproject.toml) reports no error.

py.typed ships, so plugin authors' type checkers read these annotations: they must hold.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # mypy over the package: `pytest -m "not slow"` leaves it out

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_reports_no_error(tmp_path: Path) -> None:
    pytest.importorskip("mypy", reason="mypy is in the test extra")
    out = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"),
                          "--config-file", str(ROOT / "pyproject.toml"), str(ROOT / "hepaudit"),
                          str(ROOT / "plugins" / "hepaudit-lime" / "hepaudit_lime")],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
