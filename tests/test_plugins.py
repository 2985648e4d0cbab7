"""Plugins: the template distribution installed for real, the hook contract, the plugin host.

The end-to-end tests install ``plugins/hepaudit-example`` into the running environment
(CI pre-installs it; then nothing is installed) and drive the real ``hepaudit`` command
line on a small ROOT file and ONNX model from :mod:`builders`. The permutation explainer's
numbers are checked against an independent numpy computation of the same permutations.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from builders import mlp_forward, mlp_model, save, write_jets  # noqa: E402

from hepaudit import Explainer, hookimpl, hookspecs  # noqa: E402
from hepaudit.audit import audit as run_audit  # noqa: E402
from hepaudit.errors import ConfigError, HepauditError  # noqa: E402
from hepaudit.plugins import PluginHost  # noqa: E402
from hepaudit.results import Figure  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "plugins" / "hepaudit-example"
FEATURES = ["good", "helper", "noise", "ignored"]
N_JETS = 2000
STEP = 700  # three chunks: 700, 700, 600 jets


# -- fixtures: the template installed, a toy sample, toy models --------------------------------

def _installed() -> bool:
    try:
        metadata.distribution("hepaudit-example")
    except metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec("hepaudit_example") is not None


@pytest.fixture(scope="session")
def template() -> ModuleType:
    """The template plugin, installed into this environment (by CI, or here) and imported."""
    if importlib.util.find_spec("hepaudit_example") is None or not _installed():
        have_setuptools = importlib.util.find_spec("setuptools") is not None
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "-q"]
        cmd += ["--no-build-isolation"] if have_setuptools else []
        done = subprocess.run(cmd + [str(TEMPLATE)], capture_output=True, text=True)
        assert done.returncode == 0, f"pip install {TEMPLATE} failed:\n{done.stdout}\n{done.stderr}"
        importlib.invalidate_caches()
    assert _installed()
    return importlib.import_module("hepaudit_example.plugin")


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "HEPAUDIT_DISABLE_PLUGINS"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "hepaudit.cli", *args], capture_output=True, text=True,
                          cwd=REPO, env=full_env, timeout=300)


def _toy_jets(seed: int = 7) -> dict[str, np.ndarray]:
    """Jet-level features: ``good`` separates the classes, ``helper`` a little, the rest not."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(N_JETS) % 2).astype(np.int32)
    rng.shuffle(labels)
    return {
        "good": labels * 1.2 + rng.normal(0, 1, N_JETS),
        "helper": labels * 0.3 + rng.normal(0, 1, N_JETS),
        "noise": rng.normal(0, 1, N_JETS),
        "ignored": rng.normal(0, 1, N_JETS),
        "is_signal": labels,
    }


def _linear(weights: list[float], bias: float = -0.5) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.array(weights, np.float32).reshape(-1, 1), np.array([bias], np.float32))]


CONFIG = """
[model]
path = "{model}"
[data]
files = ["jets.root"]
tree = "jets"
label = "is_signal"
step_size = {step}
[[inputs]]
name = "x"
kind = "jet"
branches = {branches}
[execution]
seed = {seed}
progress = false
{explainers}
"""


def _config(folder: Path, model: str, explainers: str, seed: int = 3) -> Path:
    path = folder / f"audit_{model.removesuffix('.onnx')}.toml"
    path.write_text(CONFIG.format(model=model, step=STEP, branches=json.dumps(FEATURES), seed=seed,
                                  explainers=explainers))
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("plugins")
    write_jets(folder / "jets.root", _toy_jets())
    save(mlp_model(_linear([2.0, 0.5, 0.3, 0.0])), folder / "mixed.onnx")  # ignores `ignored`
    save(mlp_model(_linear([1.5, 0.0, 0.0, 0.0])), folder / "one.onnx")  # only `good` matters
    return folder


# -- the template, installed, through the real command line ------------------------------------

def test_template_listed_with_version(template: ModuleType) -> None:
    done = _cli("plugins", "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert rows["example"]["version"] == "0.1.0"
    assert rows["example"]["explainers"] == ["permutation"]
    assert {"dauc", "mad"} <= {e for row in rows.values() for e in row["explainers"]}

    done = _cli("plugins", "--all", "--json")
    assert done.returncode == 0, done.stderr
    info = {row["name"]: row for row in json.loads(done.stdout)}["example"]
    assert info["builtin"] is False and info["module"] == "hepaudit_example.plugin"
    assert info["hooks"] == ["hepaudit_register_commands", "hepaudit_register_explainers",
                             "hepaudit_report_sections"]


def test_template_audit_end_to_end(template: ModuleType, toy: Path, tmp_path: Path) -> None:
    import uproot

    config = _config(toy, "mixed.onnx", "[explainers.permutation]\nper_jet = true\n[explainers.dauc]\n")
    out = tmp_path / "report"
    done = _cli("audit", str(config), "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())

    perm = report["explainers"]["permutation"]
    assert perm["status"] == "ok", perm["error"]
    assert perm["error"] is None
    assert perm["plugin"] == {"name": "example", "version": "0.1.0"}
    assert perm["options"] == {"repeats": 1, "per_jet": True}
    assert perm["repeats"] == 1 and 0.5 < perm["baseline_auc"] <= 1
    assert report["explainers"]["dauc"]["plugin"]["name"] == "dauc"
    ranking = perm["feature_importance"]
    assert sorted(s["feature"] for s in ranking) == sorted(FEATURES) == sorted(report["features"])
    scores = [s["score"] for s in ranking]
    assert scores == sorted(scores, reverse=True)
    by_name = {s["feature"]: s["score"] for s in ranking}
    assert ranking[0]["feature"] == "good" and by_name["good"] > 0.05
    assert by_name["ignored"] == 0.0
    assert all(s["score_signal"] is None and s["score_background"] is None for s in ranking)

    pairs = [{a["a"], a["b"]} for a in report["agreement"]]
    assert {"permutation", "dauc"} in pairs

    section = report["sections"]["example"]
    assert section["title"] == "Example plugin: top features agreed by every method"
    assert section["methods"] == ["dauc", "permutation"]
    assert section["agreed"][0] == "good" and set(section["agreed"]) <= set(FEATURES)
    assert section["text"]
    html = (out / "report.html").read_text()
    assert "Example plugin: top features agreed by every method" in html

    with uproot.open(out / "per_jet.root") as f:
        shift = f["hepaudit"]["permutation_max_abs_shift"].array(library="np")
    assert len(shift) == N_JETS and np.all(shift >= 0) and np.any(shift > 0)


def test_template_disabled_by_option_and_env(template: ModuleType) -> None:
    for done in (_cli("--disable", "example", "plugins", "--json"),
                 _cli("plugins", "--json", env={"HEPAUDIT_DISABLE_PLUGINS": "example"})):
        assert done.returncode == 0, done.stderr
        rows = json.loads(done.stdout)
        assert "example" not in {row["name"] for row in rows}
        assert "permutation" not in {e for row in rows for e in row["explainers"]}
        assert "dauc" in {e for row in rows for e in row["explainers"]}


def test_template_disabled_explainer_is_unknown(template: ModuleType, toy: Path, tmp_path: Path) -> None:
    config = _config(toy, "mixed.onnx", "[explainers.permutation]\n")
    done = _cli("--disable", "example", "audit", str(config), "--out", str(tmp_path / "r"), "--quiet")
    assert done.returncode == 2
    assert "unknown explainer 'permutation'" in done.stderr


def test_template_command(template: ModuleType) -> None:
    done = _cli("example-hello")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hepaudit-example 0.1.0"
    assert "example-hello" in _cli("--help").stdout
    blocked = _cli("--disable", "example", "example-hello")
    assert blocked.returncode == 2 and "example-hello" in blocked.stderr


# -- the permutation explainer's numbers -------------------------------------------------------

def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Brute force: P(signal score > background score) + 1/2 P(tie), over every pair."""
    s, b = scores[labels == 1], scores[labels == 0]
    return float(np.mean((s[:, None] > b[None, :]) + 0.5 * (s[:, None] == b[None, :])))


def _expected_permutation(x: np.ndarray, labels: np.ndarray, weights, seed: int, repeats: int) -> np.ndarray:
    """ΔAUC per feature, the permutations drawn as the template's docstring says."""
    n, k = x.shape
    base = mlp_forward(weights, x)[:, 0]
    permuted = np.empty((repeats, k, n))
    for start in range(0, n, STEP):
        stop = min(start + STEP, n)
        rng = np.random.default_rng([seed, start, stop - start])
        part = x[start:stop]
        for r in range(repeats):
            for j in range(k):
                shuffled = part.copy()
                shuffled[:, j] = part[rng.permutation(stop - start), j]
                permuted[r, j, start:stop] = mlp_forward(weights, shuffled)[:, 0]
    aucs = np.array([[_auc(row, labels) for row in rep] for rep in permuted])
    return _auc(base, labels) - aucs.mean(axis=0)


@pytest.mark.parametrize("repeats", [1, 3])
def test_permutation_matches_independent_computation(template: ModuleType, toy: Path, repeats: int) -> None:
    seed = 11
    config = _config(toy, "one.onnx", f"[explainers.permutation]\nrepeats = {repeats}\n", seed=seed)
    report = run_audit(config, out=None)
    result = report.explainers["permutation"]
    assert result.status == "ok", result.error
    got = {s.feature: s.score for s in result.feature_importance}

    jets = _toy_jets()
    x = np.stack([jets[f] for f in FEATURES], axis=1).astype(np.float32)
    expected = _expected_permutation(x, jets["is_signal"], _linear([1.5, 0.0, 0.0, 0.0]), seed, repeats)
    for j, name in enumerate(FEATURES):
        assert got[name] == pytest.approx(expected[j], abs=1e-4), name
    # only `good` matters: it leads, and features the model ignores score exactly zero
    assert result.feature_importance[0].feature == "good" and got["good"] > 0.1
    assert got["helper"] == got["noise"] == got["ignored"] == 0.0
    assert result.fields["repeats"] == repeats
    assert ("delta_auc_std" in result.fields) == (repeats > 1)


def test_permutation_is_seeded(template: ModuleType, toy: Path) -> None:
    config = _config(toy, "mixed.onnx", "[explainers.permutation]\n")
    first = run_audit(config, out=None, seed=5).explainers["permutation"].feature_importance
    again = run_audit(config, out=None, seed=5).explainers["permutation"].feature_importance
    other = run_audit(config, out=None, seed=6).explainers["permutation"].feature_importance
    assert [s.to_dict() for s in first] == [s.to_dict() for s in again]
    assert {s.feature: s.score for s in first}["good"] != {s.feature: s.score for s in other}["good"]


def test_permutation_merge_keeps_chunk_order(template: ModuleType) -> None:
    cls = template.PermutationImportance
    explainer = cls.__new__(cls)
    a, b = explainer.start(), explainer.start()
    a.base.append(np.zeros(2, np.float32))
    b.base.append(np.ones(3, np.float32))
    merged = explainer.merge(a, b)
    assert [len(x) for x in merged.base] == [2, 3]


@pytest.mark.parametrize("table,message", [
    ("repeats = 0", "explainers.permutation: repeats: expected an integer >= 1, found 0"),
    ("repeat = 2", "unknown key explainers.permutation.repeat (close matches: repeats)"),
    ("repeats = \"two\"", "explainers.permutation.repeats: expected an integer"),
])
def test_permutation_options_validated(template: ModuleType, toy: Path, table: str, message: str) -> None:
    config = _config(toy, "mixed.onnx", f"[explainers.permutation]\n{table}\n")
    with pytest.raises(ConfigError) as info:
        run_audit(config, out=None)
    assert message in str(info.value)


def test_permutation_skipped_without_labels(template: ModuleType, toy: Path) -> None:
    config = _config(toy, "mixed.onnx", "[explainers.permutation]\n")
    config.write_text(config.read_text().replace('label = "is_signal"\n', ""))
    result = run_audit(config, out=None).explainers["permutation"]
    assert result.status == "skipped" and "needs labels" in result.error
    assert result.plugin == {"name": "example", "version": "0.1.0"}


# -- the hook contract -------------------------------------------------------------------------

def _hookspecs() -> list:
    members = inspect.getmembers(hookspecs, inspect.isfunction)
    return [fn for name, fn in members if name.startswith("hepaudit_")]


def test_hooks_exist() -> None:
    names = {fn.__name__ for fn in _hookspecs()}
    assert {"hepaudit_register_explainers", "hepaudit_register_recipes", "hepaudit_report_sections",
            "hepaudit_register_commands"} <= names
    for fn in _hookspecs():
        assert hasattr(fn, "hepaudit_spec"), f"{fn.__name__} is not marked @hookspec"


@pytest.mark.parametrize("hook", _hookspecs(), ids=lambda fn: fn.__name__)
def test_every_hook_documented(hook) -> None:
    doc = inspect.getdoc(hook) or ""
    assert doc.strip(), f"{hook.__name__} has no docstring"
    for param in inspect.signature(hook).parameters:
        assert f":param {param}:" in doc, f"{hook.__name__} does not document {param}"
    assert ".. versionadded::" in doc, f"{hook.__name__} has no .. versionadded::"


def test_docs_mention_every_hook() -> None:
    text = (REPO / "docs" / "plugins.md").read_text()
    for fn in _hookspecs():
        assert fn.__name__ in text, f"docs/plugins.md does not mention {fn.__name__}"


def test_docs_python_snippets_compile() -> None:
    text = (REPO / "docs" / "plugins.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 5
    for i, block in enumerate(blocks):
        compile(block, f"docs/plugins.md python block {i + 1}", "exec")


def test_docs_section_snippet_runs(template: ModuleType, toy: Path) -> None:
    """The report-section snippet in docs/plugins.md, run on a real report."""
    text = (REPO / "docs" / "plugins.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "ReportSection(" in b)
    namespace: dict[str, object] = {}
    exec(compile(block, "docs/plugins.md", "exec"), namespace)
    report = run_audit(_config(toy, "one.onnx", "[explainers.dauc]\n[explainers.permutation]\n"), out=None)
    (section,) = namespace["hepaudit_report_sections"](report)  # type: ignore[operator]
    assert section.key == "example" and "good" in section.data["agreed"]


def test_template_implements_only_real_hooks(template: ModuleType) -> None:
    specs = {fn.__name__ for fn in _hookspecs()}
    members = inspect.getmembers(template, inspect.isfunction)
    impls = {name for name, fn in members if hasattr(fn, "hepaudit_impl")}
    assert impls and impls <= specs


# -- the plugin host ---------------------------------------------------------------------------

class _Twin(Explainer[None]):
    name = "twin"

    def update(self, state: None, chunk: object) -> None:
        return None

    def merge(self, a: None, b: None) -> None:
        return None

    def finish(self, state: None):  # type: ignore[no-untyped-def]
        return self.result()


class _Registers:
    def __init__(self, *classes: type) -> None:
        self.classes = classes

    @hookimpl
    def hepaudit_register_explainers(self, register) -> None:  # type: ignore[no-untyped-def]
        for cls in self.classes:
            register(cls)


class _Misspelled:
    @hookimpl
    def hepaudit_register_explainer(self, register) -> None:  # type: ignore[no-untyped-def]
        register(_Twin)


def test_check_pending_names_misspelled_hook() -> None:
    with pytest.raises(HepauditError) as info:
        PluginHost(entry_points=False, extra=[("bad", _Misspelled())])
    assert "hepaudit_register_explainer" in str(info.value)


def test_check_pending_through_audit(toy: Path) -> None:
    config = _config(toy, "mixed.onnx", "[explainers.dauc]\n")
    with pytest.raises(HepauditError, match="hepaudit_register_explainer"):
        run_audit(config, out=None, plugins=[("bad", _Misspelled())])


def test_duplicate_explainer_names_both_plugins() -> None:
    host = PluginHost(entry_points=False, extra=[("first", _Registers(_Twin)), ("second", _Registers(_Twin))])
    with pytest.raises(HepauditError) as info:
        host.explainers()
    message = str(info.value)
    assert "'twin'" in message and "first" in message and "second" in message


def test_duplicate_of_template_explainer(template: ModuleType) -> None:
    copy = _Registers(template.PermutationImportance)
    host = PluginHost(entry_points=False, extra=[("example", template), ("copycat", copy)])
    with pytest.raises(HepauditError, match="'permutation' is registered by both example and copycat"):
        host.explainers()


def test_duplicate_of_builtin_explainer() -> None:
    class Dauc(_Twin):
        name = "dauc"

    host = PluginHost(entry_points=False, extra=[("shadow", _Registers(Dauc))])
    with pytest.raises(HepauditError, match="'dauc' is registered by both dauc and shadow"):
        host.explainers()


def test_fresh_host_per_audit(toy: Path) -> None:
    one = PluginHost(entry_points=False, extra=[("local", _Registers(_Twin))])
    two = PluginHost(entry_points=False)
    assert "twin" in one.explainers().classes
    assert "twin" not in two.explainers().classes
    assert two.pm.get_plugin("local") is None
    assert one.plugin_of("twin") == {"name": "local", "version": "local"}

    blocked = PluginHost(entry_points=False, disable=["dauc"])
    assert "dauc" not in blocked.explainers().classes
    assert "dauc" in PluginHost(entry_points=False).explainers().classes

    # the same through audit(): a plugin passed to one audit is gone in the next
    config = _config(toy, "mixed.onnx", "[explainers.twin]\n")
    report = run_audit(config, out=None, plugins=[("local", _Registers(_Twin))])
    assert report.explainers["twin"].status == "ok"
    assert report.explainers["twin"].plugin == {"name": "local", "version": "local"}
    with pytest.raises(ConfigError, match="unknown explainer 'twin'"):
        run_audit(config, out=None)


class _Draws(_Twin):
    """Draws one figure from its result's fields, or fails to, as ``fields["fail"]`` says."""

    name = "draws"

    def finish(self, state: None):  # type: ignore[no-untyped-def]
        return self.result(fields={"fail": False, "jets": self.context.n_jets})

    def draw(self, result):  # type: ignore[no-untyped-def]
        if result.fields["fail"]:
            raise RuntimeError("no such colour")
        return [Figure("draws.png", f"{result.fields['jets']} jets", b"\x89PNG drawn")]


def test_draw_adds_figures_after_finish_and_a_failure_is_a_warning(toy: Path, tmp_path: Path) -> None:
    config = _config(toy, "mixed.onnx", "[explainers.draws]\n")
    report = run_audit(config, out=tmp_path / "out", plugins=[("local", _Registers(_Draws))])
    result = report.explainers["draws"]
    assert [f.name for f in result.figures] == ["draws.png"] and result.status == "ok"
    assert (tmp_path / "out" / "figures" / "draws.png").read_bytes() == b"\x89PNG drawn"
    assert "figures_s" in report.timing

    class _Fails(_Draws):
        def finish(self, state: None):  # type: ignore[no-untyped-def]
            return self.result(fields={"fail": True, "jets": 0})

    report = run_audit(config, out=None, plugins=[("local", _Registers(_Fails))])
    assert report.explainers["draws"].status == "ok" and report.explainers["draws"].figures == []
    assert any("draws: its figures could not be drawn: RuntimeError: no such colour" in w for w in report.warnings)


def test_registering_every_plugin_loads_no_heavy_library() -> None:
    """What every CLI command does first stays light (issue 22): onnx, onnxruntime, awkward,
    vector, uproot and matplotlib load when a command uses them (hepaudit.lazy)."""
    code = ("import sys; from hepaudit.plugins import PluginHost; h = PluginHost(); h.explainers(); h.recipes(); "
            "print(sorted({'onnx', 'onnxruntime', 'awkward', 'vector', 'uproot', 'matplotlib'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
