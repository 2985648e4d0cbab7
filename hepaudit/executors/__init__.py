"""Executors: what runs a planned audit's passes over the jets.

Every executor has the shape of :class:`Executor`: an optional first pass for x̄
(:meth:`~Executor.input_stats`), then :meth:`~Executor.run`, which feeds every explainer,
merges partition states with the same tree and finishes them; :meth:`~Executor.close`
releases what it holds (a Dask cluster). :func:`make_executor` picks the one
``[execution]`` asks for: :class:`~hepaudit.executors.local.LocalExecutor` in this process,
:class:`~hepaudit.executors.dask.DaskExecutor` on a cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from hepaudit.config import AuditConfig
    from hepaudit.data.reading import Sample
    from hepaudit.data.stats import InputStats
    from hepaudit.executors.local import Job, Outcome


class Executor(Protocol):
    """Runs a :class:`~hepaudit.executors.local.Job`; ``outcome`` holds its counters."""

    outcome: Outcome

    def input_stats(self, sample: Sample, job: Job) -> InputStats:
        """The x̄ pass over ``sample``: input sums and feature moments."""

    def run(self, job: Job) -> Outcome:
        """Reference passes, the audit pass, the merge tree, every explainer's finish."""

    def close(self) -> None:
        """Release what the executor holds (nothing, for the local one)."""


def make_executor(cfg: AuditConfig, disable: Sequence[str] = (), plugins: Sequence[tuple[str, object]] = (),
                  client: object = None) -> Executor:
    """The executor ``[execution]`` asks for (a Dask one connects to or starts its cluster here;
    ``client``, a ``distributed.Client``, is used instead of ``execution.scheduler``)."""
    ex = cfg.execution
    if ex.executor == "local":
        from hepaudit.executors.local import LocalExecutor

        return LocalExecutor(cache_bytes=ex.cache_mb << 20, partition_size=ex.partition_size, prefetch=ex.prefetch)
    from hepaudit.executors.dask import DaskExecutor

    return DaskExecutor(cfg, scheduler=client if client is not None else ex.scheduler,
                        workers=None if client is not None else ex.workers, threads_per_worker=ex.threads_per_worker,
                        disable=tuple(disable), plugins=tuple(plugins), partition_size=ex.partition_size)
