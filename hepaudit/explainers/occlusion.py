"""What the occlusion explainers (ΔAUC, MAD) share: options and the units they occlude.

x\\k is x with feature k replaced by the baseline: x̄ (the mean over all audited jets, or
over the reference sample when one is configured) by default, or a constant. A *unit* is
one feature or one group of features occluded together. Both explainers ask the chunk for
the same units with the same baseline, so their forward passes are computed once.
"""

from __future__ import annotations

from dataclasses import dataclass

from hepaudit.errors import ConfigError
from hepaudit.explainers.base import AuditContext


@dataclass(frozen=True)
class OcclusionOptions:
    baseline: str | float = "mean"
    # true: the groups particle_{i} and feature_{name}; a table: {name = ["glob", ...]}
    groups: bool | dict[str, list[str]] = False

    def __post_init__(self) -> None:
        if isinstance(self.baseline, str) and self.baseline != "mean":
            raise ValueError(f"baseline: expected \"mean\" or a number, found {self.baseline!r}")


@dataclass(frozen=True)
class Units:
    """The feature units (one per feature, in model order) then the group units."""

    features: list[list[int]]
    group_names: list[str]
    groups: list[list[int]]

    @property
    def all(self) -> list[list[int]]:
        return self.features + self.groups


def occlusion_units(context: AuditContext, groups: bool | dict[str, list[str]], where: str) -> Units:
    features = [[k] for k in range(len(context.features))]
    if groups is True:
        named = dict(context.groups)
    elif isinstance(groups, dict):
        named = {}
        for name, patterns in groups.items():
            members = context.builder.match(patterns)
            if not members:
                raise ConfigError(f"explainers.{where}.groups.{name}: the patterns {patterns} match no feature")
            named[name] = members
    else:
        named = {}
    return Units(features, list(named), list(named.values()))
