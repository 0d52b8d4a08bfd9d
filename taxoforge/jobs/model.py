"""What a job is: its kinds, its states as the API spells them, its id, its clock."""

from __future__ import annotations

import hashlib
import os
import time
from enum import StrEnum

from taxoforge.v1 import common_pb2 as pb

__all__ = ["TERMINAL_STATES", "JobKind", "job_kind", "new_job_id", "now_ms", "state_name"]

TERMINAL_STATES = frozenset({pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED})


class JobKind(StrEnum):
    """What a job does; each kind ends with its own finishing stage."""

    GENERATE = "generate"
    EXPAND = "expand"
    INDUCE = "induce"
    # Selection only, over an imported dataset.
    SELECT = "select"


def job_kind(job: pb.Job) -> JobKind:
    """A job's kind (records from before kinds existed are generation jobs)."""
    return JobKind(job.kind or JobKind.GENERATE.value)


def new_job_id(idempotency_key: str | None = None) -> str:
    """A time-ordered random job id, or one derived from a client's idempotency key."""
    if idempotency_key:
        return "j-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:20]
    return f"j-{int(time.time() * 1000):011x}{os.urandom(4).hex()}"


def state_name(state: int) -> str:
    """A job state as the API spells it: "running", "succeeded", ..."""
    return pb.JobState.Name(pb.JobState.ValueType(state)).removeprefix("JOB_STATE_").lower()


def now_ms() -> int:
    """Wall-clock milliseconds, the unit of every timestamp in records."""
    return int(time.time() * 1000)
