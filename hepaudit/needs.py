"""What an explainer may declare in ``needs``, and what each one makes the executor do.

``needs`` is a frozenset of these names; :class:`~hepaudit.registries.ExplainerRegistry`
refuses any other (with the close matches), so a typo is caught when the plugin loads.
"""

from __future__ import annotations

from typing import Literal

#: One thing an explainer can ask the run for.
Need = Literal["labels", "input_mean", "reference", "arrays"]

LABELS: Need = "labels"
"""Labels on every chunk; the audit skips the explainer, with the reason, when the data has no
label branch or only one class."""

INPUT_MEAN: Need = "input_mean"
"""x̄ (``context.input_mean``) and per-feature binning ranges (``context.feature_range``),
from a first pass over the data (or the ``[reference]`` sample), before the first chunk."""

REFERENCE: Need = "reference"
"""A reference pass: ``update_reference`` with every chunk of the reference sample, then
``prepare`` with the merged state, before the first audited chunk."""

ARRAYS: Need = "arrays"
"""``chunk.arrays`` holds the raw branches (without it an executor may keep only labels and weights)."""

KNOWN_NEEDS: frozenset[str] = frozenset({LABELS, INPUT_MEAN, REFERENCE, ARRAYS})
