"""Names of every stream, subject, consumer and bucket, in one place."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "CONSUMERS",
    "DLQ_STREAM",
    "DLQ_SUBJECTS",
    "ENDED_SUBJECTS",
    "KV_ITEMS",
    "KV_JOBS",
    "KV_LLM_CACHE",
    "KV_TAXONOMIES",
    "OBJ_DATASETS",
    "OBJ_TAXONOMIES",
    "WORK_STREAM",
    "WORK_SUBJECTS",
    "Stage",
    "dlq_subject",
    "ended_subject",
    "work_subject",
]


class Stage(StrEnum):
    """Pipeline stages, in order. Each has one work-queue subject."""

    PLAN = "plan"
    INSTRUCT = "instruct"
    RESPOND = "respond"
    JUDGE = "judge"
    SELECT = "select"
    # Contrastive filtering sends an instruction back for another Self-Rubrics round.
    REFINE = "refine"
    # Taxonomy jobs: GLAN expansion of nodes, induction from instructions, and applying the
    # result as a new taxonomy version.
    EXPAND = "expand"
    INDUCE = "induce"
    APPLY = "apply"
    # Selection (TACOS): examples from judgments or an import, deduplicated and
    # decontaminated; open tags per query; clusters and comparison plan; each planned sample
    # against its cluster's reference (judge); then SELECT writes the datasets.
    PREPARE = "prepare"
    TAG = "tag"
    CLUSTER = "cluster"
    COMPARE = "compare"


WORK_STREAM = "TF_WORK"
WORK_SUBJECTS = "tf.work.>"
DLQ_STREAM = "TF_DLQ"
DLQ_SUBJECTS = "tf.dlq.>"
KV_JOBS = "tf-jobs"
KV_ITEMS = "tf-items"
OBJ_DATASETS = "tf-datasets"
KV_TAXONOMIES = "tf-taxonomies"
KV_LLM_CACHE = "tf-llm-cache"
OBJ_TAXONOMIES = "tf-taxonomy-versions"

# One durable pull consumer per service, shared by all of its replicas.
CONSUMERS: dict[str, tuple[Stage, ...]] = {
    "taxonomy": (Stage.PLAN, Stage.EXPAND, Stage.INDUCE, Stage.APPLY),
    "generator": (Stage.INSTRUCT, Stage.RESPOND, Stage.REFINE),
    "judge": (Stage.JUDGE, Stage.COMPARE),
    "selector": (Stage.PREPARE, Stage.TAG, Stage.CLUSTER, Stage.SELECT),
}


def work_subject(stage: Stage) -> str:
    """The work-queue subject of a stage."""
    return f"tf.work.{stage.value}"


ENDED_SUBJECTS = "tf.ended.*"


def ended_subject(job_id: str) -> str:
    """Where an item's end is announced (core NATS, a hint: completion is checked on the store)."""
    return f"tf.ended.{job_id}"


def dlq_subject(stage: Stage) -> str:
    """Where a stage's dead letters go."""
    return f"tf.dlq.{stage.value}"
