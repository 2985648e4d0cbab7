"""The errors hepaudit raises for users, each with the exit code the CLI maps it to.

Messages are one or two lines naming the file, branch, ONNX input or config key at
fault, with what was expected and what was found (docs/contract.md section 1).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HepauditWarning(UserWarning):
    """A report warning, raised as a Python warning by :func:`hepaudit.audit` (notebooks show
    them; ``warnings.simplefilter("ignore", HepauditWarning)`` silences them)."""


class HepauditError(Exception):
    """Base class: an error meant for the user, not a bug. ``exit_code`` per the contract."""

    exit_code: int = 1


class ConfigError(HepauditError):
    """Bad usage or bad config (exit code 2)."""

    exit_code = 2


class DataError(HepauditError):
    """The input data cannot be read or used (exit code 1)."""


class ModelError(HepauditError):
    """The ONNX model cannot be loaded, does not match the config, or misbehaves (exit 1)."""


class OutputError(HepauditError):
    """The output folder cannot be written (exit code 1)."""


def pointed_at(exc: HepauditError) -> HepauditError:
    """``exc`` as a fault in what the user wrote or pointed at (config, paths, files, branches,
    shapes), found before any jet is read: exit code 2, as the contract's table says."""
    exc.exit_code = 2
    return exc


def close_matches(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """A ``" (close matches: a, b)"`` suffix for error messages, or ``""`` when none."""
    found = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.6)
    return f" (close matches: {', '.join(found)})" if found else ""
