"""hepaudit-example: the template for a third-party hepaudit plugin.

The hooks live in :mod:`hepaudit_example.plugin`, which the ``hepaudit`` entry point in
pyproject.toml names. Copy this whole folder to start a plugin of your own (README.md).
"""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("hepaudit-example")
except metadata.PackageNotFoundError:  # imported from a source tree without installing
    __version__ = "0.1.0"

__all__ = ["__version__"]
