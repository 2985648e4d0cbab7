"""A broken third-party plugin is reported and left out; hepaudit and every other plugin run on.

Each case puts a real distribution on the path of a ``hepaudit`` subprocess (a
``*.dist-info`` with an entry point in the ``hepaudit`` group, and its module), broken in one
hook: it fails to import, raises while registering, while adding its report section, or
while adding its commands. The audit still writes its report, with the problem among its
warnings; an explainer of the broken plugin is unknown, and the error says why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from conftest import AuditSetup  # noqa: E402

pytestmark = pytest.mark.slow  # a subprocess per broken plugin: `pytest -m "not slow"` leaves it out

PLUGINS = {
    "import": "raise ImportError('a dependency of this plugin is missing')\n",
    "register": """
        from hepaudit.api import hookimpl

        @hookimpl
        def hepaudit_register_explainers(register):
            raise RuntimeError('registration went wrong')
        """,
    "section": """
        from hepaudit.api import hookimpl

        @hookimpl
        def hepaudit_report_sections(report):
            raise KeyError('a field this plugin expected')
        """,
    "commands": """
        from hepaudit.api import hookimpl

        @hookimpl
        def hepaudit_register_commands(cli):
            raise ValueError('no commands today')
        """,
}


def broken_site(folder: Path, kind: str) -> Path:
    site = folder / f"site-{kind}"
    dist = site / "hepaudit_broken-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hepaudit-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[hepaudit]\nbroken = hepaudit_broken_plugin\n")
    (site / "hepaudit_broken_plugin.py").write_text(textwrap.dedent(PLUGINS[kind]))
    return site


def hepaudit(site: Path, *args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "hepaudit.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


@pytest.mark.parametrize("kind,said", [
    ("import", "failed to import (hepaudit_broken_plugin): ImportError: a dependency of this plugin is missing"),
    ("register", "raised in hepaudit_register_explainers: RuntimeError: registration went wrong"),
    ("section", "its report section could not be made: KeyError"),
])
def test_the_report_is_written_with_the_problem_among_its_warnings(setup: AuditSetup, kind: str, said: str) -> None:
    site = broken_site(setup.dir, kind)
    result = hepaudit(site, "audit", setup.write(), "--out", setup.dir / "out", cwd=setup.dir)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads((setup.dir / "out" / "report.json").read_text())
    assert any("plugin broken" in w and said in w for w in report["warnings"]), report["warnings"]
    assert report["explainers"]["dauc"]["status"] == "ok"
    assert said in result.stdout + result.stderr  # the summary says it too


@pytest.mark.parametrize("kind", ["import", "register", "commands"])
def test_other_commands_run_and_warn(setup: AuditSetup, kind: str) -> None:
    site = broken_site(setup.dir, kind)
    result = hepaudit(site, "inspect", setup.data, cwd=setup.dir)
    assert result.returncode == 0, result.stderr
    assert "jets" in result.stdout and "Traceback" not in result.stderr
    assert result.stderr.startswith("hepaudit: warning: plugin broken")
    listed = hepaudit(site, "plugins", cwd=setup.dir)
    assert listed.returncode == 0 and "dauc" in listed.stdout


def test_an_explainer_of_a_broken_plugin_is_unknown_and_the_error_says_why(setup: AuditSetup) -> None:
    site = broken_site(setup.dir, "import")
    doc = setup.doc()
    doc["explainers"] = {"permutation_of_broken": {}}
    result = hepaudit(site, "audit", setup.write(doc), "--out", setup.dir / "out", cwd=setup.dir)
    assert result.returncode == 2, result.stderr
    assert "unknown explainer 'permutation_of_broken'" in result.stderr
    assert "plugin broken failed to import" in result.stderr and "Traceback" not in result.stderr
    assert not (setup.dir / "out").exists()


def test_a_plugin_command_that_raises_is_one_line_not_a_traceback(setup: AuditSetup) -> None:
    PLUGINS["failing-command"] = """
        import click
        from hepaudit.api import hookimpl

        @hookimpl
        def hepaudit_register_commands(cli):
            @cli.command("broken-hello")
            def hello():
                raise ZeroDivisionError("the plugin's own bug")
        """
    site = broken_site(setup.dir, "failing-command")
    result = hepaudit(site, "broken-hello", cwd=setup.dir)
    assert result.returncode == 1
    assert result.stderr.strip() == ("hepaudit: error: unexpected ZeroDivisionError: the plugin's own bug (rerun "
                                     "with --debug or HEPAUDIT_DEBUG=1 for the traceback; if it is not a plugin's, "
                                     "please report it)")
    os.environ["HEPAUDIT_DEBUG"] = "1"
    try:
        debug = hepaudit(site, "broken-hello", cwd=setup.dir)
    finally:
        del os.environ["HEPAUDIT_DEBUG"]
    assert "Traceback" in debug.stderr and debug.returncode == 1


CHATTY = """
    import warnings
    from dataclasses import dataclass

    import numpy as np
    from hepaudit.api import Explainer, FeatureScore, hookimpl

    @dataclass(frozen=True)
    class Options:
        pass

    class Chatty(Explainer):
        name = "chatty"
        Options = Options

        def start(self):
            return 0

        def update(self, state, chunk):
            np.log(np.zeros(3) - 1.0)  # numpy's RuntimeWarning: invalid value in log
            warnings.warn("a library's stray warning")
            return state + len(chunk)

        def merge(self, a, b):
            return a + b

        def finish(self, state):
            return self.result(feature_importance=[FeatureScore("jets", float(state))])

    @hookimpl
    def hepaudit_register_explainers(register):
        register(Chatty)
    """


@pytest.mark.parametrize("executor", ["local", "dask"])
def test_library_warnings_stay_off_the_terminal_unless_debug(setup: AuditSetup, executor: str) -> None:
    if executor == "dask":
        pytest.importorskip("distributed")
    PLUGINS["chatty"] = CHATTY
    site = broken_site(setup.dir, "chatty")
    doc = setup.doc()
    doc["explainers"] = {"chatty": {}}
    doc["execution"] = {"executor": executor, "workers": 1} if executor == "dask" else {}
    config = setup.write(doc)
    quiet = hepaudit(site, "audit", config, "--out", setup.dir / "quiet", cwd=setup.dir)
    assert quiet.returncode == 0, quiet.stderr
    assert "Warning" not in quiet.stderr and "stray" not in quiet.stderr, quiet.stderr
    assert "chatty" in quiet.stderr  # the summary is still there
    loud = hepaudit(site, "audit", config, "--out", setup.dir / "loud", "--debug", cwd=setup.dir)
    assert loud.returncode == 0, loud.stderr
    assert "RuntimeWarning" in loud.stderr and "a library's stray warning" in loud.stderr
