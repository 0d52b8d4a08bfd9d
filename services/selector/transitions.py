"""The selector's job transitions that more than one step makes."""

from __future__ import annotations

from collections.abc import Callable

from taxoforge.bus import Stage
from taxoforge.v1 import common_pb2 as pb

__all__ = ["save_report"]


def save_report(step: Stage, report: pb.SelectionReport) -> Callable[[pb.Job], bool]:
    """A job update that stores ``report``, only while the job is still selecting at ``step``
    (a step run late, after the job moved on or ended, changes nothing)."""

    def _mutate(job: pb.Job) -> bool:
        if job.state != pb.JOB_STATE_SELECTING or job.phase != step.value:
            return False
        job.selection.CopyFrom(report)
        return True

    return _mutate
