"""What the occlusion explainers (ΔAUC, MAD) share: options and the units they occlude.

x\\k is x with feature k replaced by the baseline: x̄ (the mean over all audited jets, or
over the reference sample when one is configured) by default, or a constant. A *unit* is
one feature or one group of features occluded together. Both explainers ask the chunk for
the same units with the same baseline, so their forward passes are computed once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hepaudit.errors import ConfigError
from hepaudit.explainers.base import AuditContext


@dataclass(frozen=True)
class OcclusionOptions:
    baseline: str | float = "mean"  # what an occluded feature is set to: "mean" (x̄) or a number
    # true: every built-in group (particle_{i}, feature_{name}, input_{name});
    # "particle" / "feature" / "input" or a list of them: those kinds only;
    # a table: {name = ["glob", ...]}
    groups: bool | str | list[str] | dict[str, list[str]] = False
    # false: score the groups only, not every single feature (models with thousands of
    # features, e.g. ParticleNet's 2798, where one forward pass per feature is too slow)
    features: bool = True
    # a hidden tensor whose channels are occluded too (each set to its mean over the audited
    # jets, or to the constant baseline) with the rest of the network run from it
    hidden: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.baseline, str) and self.baseline != "mean":
            raise ValueError(f"baseline: expected \"mean\" or a number, found {self.baseline!r}")
        kinds = [self.groups] if isinstance(self.groups, str) else self.groups if isinstance(self.groups, list) else []
        for kind in kinds:
            if kind not in GROUP_KINDS:
                raise ValueError(f"groups: expected true, a table, or group kinds {list(GROUP_KINDS)}, found {kind!r}")
        if not self.features and not self.groups:
            raise ValueError("features = false needs groups: there would be nothing to occlude")


#: Built-in group kinds and the group names they select, tried in this order: a group has one
#: kind (``input_4.particle_0`` is a particle group of input ``input_4``, not an input group).
GROUP_KINDS: dict[str, re.Pattern[str]] = {
    "particle": re.compile(r"(^|\.)particle_\d+$"),
    "feature": re.compile(r"^feature_"),
    "input": re.compile(r"^input_"),
}


def group_kind(name: str) -> str | None:
    """The built-in kind of a group name, or None for a name that is none of them."""
    return next((kind for kind, pattern in GROUP_KINDS.items() if pattern.search(name)), None)


@dataclass(frozen=True)
class Units:
    """The feature units (one per feature, in model order) then the group units."""

    features: list[list[int]]
    group_names: list[str]
    groups: list[list[int]]

    @property
    def all(self) -> list[list[int]]:
        return self.features + self.groups


def occlusion_units(context: AuditContext, groups: bool | str | list[str] | dict[str, list[str]], where: str,
                    features: bool = True) -> Units:
    """The units to occlude: every feature (unless ``features`` is false), then the groups."""
    singles = [[k] for k in range(len(context.features))] if features else []
    if groups is True:
        named = dict(context.groups)
    elif isinstance(groups, (str, list)):
        kinds = [groups] if isinstance(groups, str) else groups
        named = {g: ks for g, ks in context.groups.items() if group_kind(g) in kinds}
        if not named:
            raise ConfigError(f"explainers.{where}.groups = {groups!r}: the model has no such groups "
                              f"(known: {', '.join(list(context.groups)[:6]) or 'none'})")
    elif isinstance(groups, dict):
        named = {}
        for name, patterns in groups.items():
            members = context.builder.match(patterns)
            if not members:
                raise ConfigError(f"explainers.{where}.groups.{name}: the patterns {patterns} match no feature")
            named[name] = members
    else:
        named = {}
    return Units(singles, list(named), list(named.values()))
