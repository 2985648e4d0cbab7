"""hepaudit-lime: LIME (Ribeiro, Singh, Guestrin 2016) as a hepaudit explainer plugin.

Written against :mod:`hepaudit.api` only. The hooks live in :mod:`hepaudit_lime.plugin`; the
surrogate fit in :mod:`hepaudit_lime.surrogate`.
"""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("hepaudit-lime")
except metadata.PackageNotFoundError:  # imported from a source tree without installing
    __version__ = "0.1.0"

__all__ = ["__version__"]
