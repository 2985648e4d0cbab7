"""What importing hepaudit costs: ``import hepaudit`` (and the plugin surface) in fresh processes.

Each repetition starts a new interpreter and reads ``python -X importtime``'s cumulative
time of the top-level module (the interpreter's own start-up excluded). Printed: the median
and range over the repetitions for ``import hepaudit``, ``import hepaudit.api``,
``from hepaudit import Explainer, hookimpl`` (what a plugin module does at import), and
``import numpy`` for scale, with the ratios to numpy's, interleaved so load on the machine
hits every case alike. The issue's limit: ``import hepaudit`` under 0.3 s on this machine.
Then what every command pays first (issue 22): the imports of registering every plugin, and
the wall time of ``hepaudit --version`` against ``python -c 'import numpy'`` (target <= 3).

    python benchmarks/bench_import.py [--repeat 15] [--tree PATH]

Before/after a change, run both with ``--tree`` (the same ``python -S`` start-up), e.g.
``git worktree add /tmp/old COMMIT`` then ``--tree /tmp/old`` and ``--tree .``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

sys.path.insert(0, __import__("os").path.dirname(__file__))

CASES = {
    "import hepaudit": ("import hepaudit", "hepaudit"),
    "import hepaudit.api": ("import hepaudit.api", "hepaudit.api"),
    "plugin module imports": ("from hepaudit import Explainer, hookimpl", None),
    # what every CLI command does first: every plugin registered (issue 22: onnx, onnxruntime,
    # awkward and vector load when a command uses them, not here)
    "plugins registered": ("from hepaudit.plugins import PluginHost; h = PluginHost(); h.explainers(); h.recipes()",
                           None),
    "import numpy": ("import numpy", "numpy"),
}

#: whole processes, wall time: the command a CI job or a shell runs, against ``import numpy``
WALL = {
    "hepaudit --version": ["-m", "hepaudit.cli", "--version"],
    "python -c 'import numpy'": ["-c", "import numpy"],
}


def wall_seconds(args: list[str]) -> float:
    import os
    import time

    env = dict(os.environ)
    command = [sys.executable, *args]
    if TREE:
        import sysconfig

        command.insert(1, "-S")
        env["PYTHONPATH"] = os.pathsep.join([TREE, sysconfig.get_paths()["purelib"]])
    t0 = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True, env=env, cwd="/")
    return time.perf_counter() - t0


#: ``--tree PATH``: import hepaudit from another checkout (e.g. a ``git worktree`` of an older
#: commit) instead of the installed one: ``python -S`` with PYTHONPATH = PATH, then site-packages.
TREE: str | None = None


def _top_level(code: str) -> dict[str, int]:
    """Top-level imports of a new interpreter running ``code``: module -> cumulative µs."""
    import os
    import sysconfig

    command, env = [sys.executable, "-X", "importtime", "-c", code], dict(os.environ)
    if TREE:
        command.insert(1, "-S")
        env["PYTHONPATH"] = os.pathsep.join([TREE, sysconfig.get_paths()["purelib"]])
    # from the root folder: -c puts the working directory first on sys.path, which must not be a checkout
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env, cwd="/")
    found: dict[str, int] = {}
    for line in out.stderr.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or "cumulative" in parts[1]:
            continue
        name = parts[2]
        if len(name) - len(name.lstrip()) == 1:  # one space after the bar: imported by the code or start-up
            found[name.strip()] = found.get(name.strip(), 0) + int(parts[1])
    return found




def import_seconds(code: str, module: str | None) -> float:
    """Cumulative import time (s) of ``module`` (None: everything ``code`` imported) in a new interpreter."""
    try:
        found = _top_level(code)
    except subprocess.CalledProcessError:  # an older checkout without that module
        return float("nan")
    if module is not None:
        return found.get(module, 0) / 1e6
    startup = set(_top_level("pass"))
    return sum(us for name, us in found.items() if name not in startup) / 1e6


def main() -> None:
    from common import machine

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--tree", help="a checkout to import hepaudit from (python -S; compare only with --tree runs)")
    args = parser.parse_args()
    global TREE
    TREE = args.tree
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.repeat):
        for name, (code, module) in CASES.items():
            times[name].append(import_seconds(code, module))
    numpy = statistics.median(times["import numpy"])
    print(f"machine: {machine()}")
    print(f"{args.repeat} fresh interpreters per case, interleaved; python -X importtime, cumulative")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"  {name:<24} median {med * 1e3:7.1f} ms  (range {min(values) * 1e3:.1f}-{max(values) * 1e3:.1f})"
              f"  ratio to numpy {med / numpy:5.2f}")
    verdict = "met" if statistics.median(times["import hepaudit"]) < 0.3 else "NOT met"
    print(f"target: import hepaudit < 300 ms -> {verdict}")
    walls: dict[str, list[float]] = {name: [] for name in WALL}
    for _ in range(args.repeat):
        for name, command in WALL.items():
            walls[name].append(wall_seconds(command))
    base = statistics.median(walls["python -c 'import numpy'"])
    print(f"{args.repeat} whole processes per case, interleaved; wall time")
    for name, values in walls.items():
        med = statistics.median(values)
        print(f"  {name:<26} median {med * 1e3:7.1f} ms  (range {min(values) * 1e3:.1f}-{max(values) * 1e3:.1f})"
              f"  ratio {med / base:5.2f}")
    print("target (issue 22): hepaudit's start-up / import numpy <= 3")


if __name__ == "__main__":
    main()
