"""The run of a plan on an executor: the x̄ pass, the explainers made, the passes over the jets.

The per-jet writer is aborted (its temporary file removed) on any failure or interrupt, and
the executor is always closed.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from hepaudit.errors import DataError
from hepaudit.guards import first_layer_scale

if TYPE_CHECKING:  # pragma: no cover
    from hepaudit.executors import Executor
    from hepaudit.executors.local import Outcome
    from hepaudit.report.per_jet import PerJetSink
    from hepaudit.run.plan import AuditPlan
    from hepaudit.run.progress import Progress


def execute(plan: AuditPlan, executor: Executor, per_jet: PerJetSink | None, progress: Progress
            ) -> tuple[Outcome, dict[str, float]]:
    """Run ``plan`` on ``executor``; the outcome and the seconds of the x̄ pass (``input_stats_s``)."""
    job = plan.job(per_jet, progress)
    try:
        t0 = time.perf_counter()
        if plan.needs("input_mean"):
            stats = executor.input_stats(plan.reference or plan.sample, job)
            plan.context.input_mean = stats.mean()
            plan.context.feature_range = stats.feature_range()
            plan.warnings.extend(stats.warnings(plan.builder.features))
            plan.input_facts = stats.describe(plan.builder.features)
            plan.check("config", "alert", first_layer_scale(plan.tagger.proto, plan.builder, stats))
        stats_s = time.perf_counter() - t0
        plan.instantiate()
        outcome = executor.run(job)
        if outcome.n_jets == 0:
            raise DataError(f"no jet is left to audit: the {plan.sample.n_entries} selected jets were all dropped "
                            "(NaN or inf inputs, weights or scores with data.nonfinite = \"drop\") or in files "
                            "left out as unreadable")
    except BaseException:
        if per_jet is not None:
            per_jet.abort()
        raise
    finally:
        executor.close()
    return outcome, {"input_stats_s": stats_s}
