"""The output folder: a report is written to a hidden sibling folder and published only whole.

``--force`` must never cost a user the report they had. So a run writes nothing into
``--out`` while it runs: everything it produces (per_jet.root, its Dask part files, figures,
report.json, report.html, a fitted autoencoder) goes to a staging folder next to it
(``.NAME.hepaudit-XXXX``, on the same file system, so the final moves are renames). Only
when the report is complete are its files moved into ``--out``, each replacing its
namesake; the files of an earlier report that this run did not produce are removed, and
nothing else in the folder is touched. On any failure, Ctrl-C or SIGTERM the staging
folder is removed and ``--out`` is as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from hepaudit.errors import ConfigError, OutputError, pointed_at

#: What a report consists of: the only names hepaudit ever replaces or removes in ``--out``.
OWNED = ("report.json", "report.html", "per_jet.root", "figures", "ood_autoencoder.onnx")


class StagedOutput:
    """A report's output folder ``out``, staged; use as a context manager around the run."""

    def __init__(self, out: Path, force: bool, inputs: Iterable[Path] = ()) -> None:
        self.out = out
        if out.exists() and not out.is_dir():
            raise pointed_at(OutputError(f"{out}: exists and is not a folder"))
        if out.exists() and any(out.iterdir()) and not force:
            raise pointed_at(OutputError(f"{out}: the output folder is not empty (it may hold an earlier report); "
                                         "choose another --out or pass --force to overwrite"))
        inside = [p for p in inputs if _within(p, out)]
        if inside:
            raise ConfigError(f"{out}: the output folder holds the audit's own input {inside[0]}; "
                              "choose an --out that holds only reports")
        parent = out.parent
        blocking = next((p for p in (parent, *parent.parents) if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise pointed_at(OutputError(f"{out}: {blocking} on its path is a file, not a folder"))
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.hepaudit-", dir=parent))
        except OSError as exc:
            raise OutputError(f"{out}: cannot write there ({exc.strerror or exc})") from None

    def __enter__(self) -> StagedOutput:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None:
            self.publish()
            return
        self.discard()
        if isinstance(exc, OSError):  # a full or read-only disk, a quota: say where, and that nothing was lost
            raise OutputError(f"{self.out}: the report could not be written ({exc.strerror or exc}); "
                              "an earlier report there is untouched") from None

    def publish(self) -> None:
        """Move the finished report into ``out``, replacing only a report's own files."""
        replaced = self.stage / ".replaced"
        moved: list[str] = []  # the earlier report's files set aside, to put back on a failure
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            replaced.mkdir()
            produced = [p for p in self.stage.iterdir() if p != replaced]
            for name in dict.fromkeys([*OWNED, *(p.name for p in produced)]):
                old = self.out / name
                if old.exists() or old.is_symlink():
                    os.replace(old, replaced / name)
                    moved.append(name)
            for path in produced:
                os.replace(path, self.out / path.name)
        except OSError as exc:
            _put_back(replaced, self.out, moved)
            raise OutputError(f"{self.out}: the finished report could not be moved there ({exc}); "
                              "the earlier report is left as it was") from None
        finally:
            self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)


def _within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except (ValueError, OSError):
        return False
    return True


def _put_back(replaced: Path, out: Path, names: list[str]) -> None:
    """Undo a publish that failed half-way: the earlier report's files go back in place."""
    for name in names:
        target = out / name
        try:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(replaced / name, target)
        except OSError:
            pass  # best effort: the failure itself is reported by publish
