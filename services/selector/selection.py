"""Running selection for a finished job: read its items, select, write its datasets."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

import structlog

from services.selector.core import Record, select
from taxoforge.datasets import DatasetStore, dataset_object
from taxoforge.errors import TransientError
from taxoforge.service import ServiceContext
from taxoforge.store import TERMINAL_STATES, ItemKind
from taxoforge.usage import add_usage
from taxoforge.v1 import common_pb2 as pb

__all__ = ["SelectionRunner"]

log = structlog.get_logger(__name__)

_TOP_REASONS = 5


class SelectionRunner:
    """Selects a job's records and writes its datasets; running it twice gives the same files."""

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._datasets = DatasetStore(ctx.bus)

    async def run(self, job: pb.Job) -> tuple[list[pb.DatasetInfo], pb.SelectionReport]:
        """Select and write; the job ends SUCCEEDED with its datasets and report.

        Raises:
            TransientError: not every planned item has ended yet.
        """
        items = self._ctx.items
        outcomes = [o async for o in items.scan(job.id, ItemKind.OUTCOME, pb.ItemOutcome)]
        if len(outcomes) < job.planned:
            raise TransientError(f"{len(outcomes)} of {job.planned} items have ended; not yet")
        judged = {o.item_id for o in outcomes if o.judged}
        judgments = [
            j
            async for j in items.scan(job.id, ItemKind.JUDGMENT, pb.Judgment)
            if j.item_id in judged
        ]
        selection = select(judgments, job.recipe.budget)

        report = pb.SelectionReport(
            judged=len(judgments),
            failed=len(outcomes) - len(judged),
            sft_records=len(selection.sft),
            preference_records=len(selection.preference),
            ties=selection.ties,
            over_budget=selection.over_budget,
        )
        for stage, n in Counter(o.failed_stage for o in outcomes if not o.judged).items():
            report.failures_by_stage[stage] = n
        for judgment in judgments:
            seed = judgment.instruction.seed
            report.by_language[seed.language] += 1
            report.by_strategy[judgment.instruction.strategy or seed.strategy or "tap"] += 1
            for rejection in judgment.instruction.rejections:
                report.rejections[rejection.reason] += 1
            for response in judgment.responses:
                for rejection in response.rejections:
                    report.rejections[f"response_{rejection.reason}"] += 1
        async for rejected in items.scan(job.id, ItemKind.REJECTED, pb.Instruction):
            for rejection in rejected.rejections:
                report.rejections[rejection.reason] += 1
        if report.failed:
            reasons = Counter(
                [
                    (f.stage, f.reason[:300])
                    async for f in items.scan(job.id, ItemKind.FAILURE, pb.ItemFailure)
                    if f.item_id not in judged
                ]
            )
            for (stage, reason), n in reasons.most_common(_TOP_REASONS):
                report.failure_reasons.add(stage=stage, reason=reason, items=n)
        report.usage.CopyFrom(await self._exact_usage(job.id))

        datasets = [
            await self._write(job.id, "sft", selection.sft),
            await self._write(job.id, "preference", selection.preference),
        ]

        def _succeed(j: pb.Job) -> bool:
            if j.state in TERMINAL_STATES:
                return False
            if report.judged == 0:
                # Nothing to train on: say so, with the reason most items gave.
                j.state = pb.JOB_STATE_FAILED
                top = report.failure_reasons[0] if report.failure_reasons else None
                j.error = "every item failed" + (
                    f"; most often at {top.stage}: {top.reason}" if top else ""
                )
            else:
                j.state = pb.JOB_STATE_SUCCEEDED
            del j.datasets[:]
            j.datasets.extend(datasets)
            j.selection.CopyFrom(report)
            return True

        await self._ctx.jobs.update(job.id, _succeed)
        log.info(
            "job_selected",
            sft=report.sft_records,
            preference=report.preference_records,
            failed=report.failed,
        )
        return datasets, report

    async def _write(self, job_id: str, kind: str, records: list[Record]) -> pb.DatasetInfo:
        with tempfile.TemporaryDirectory(prefix="taxoforge-") as tmp:
            path = Path(tmp) / f"{kind}.jsonl"
            with path.open("w", encoding="utf-8") as fh:
                for record in records:
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            return await self._datasets.put_file(
                dataset_object(job_id, kind), kind, path, len(records)
            )

    async def _exact_usage(self, job_id: str) -> pb.Usage:
        """Every recorded call behind the job's items, counted once."""
        total = pb.Usage()
        items = self._ctx.items
        async for instruction in items.scan(job_id, ItemKind.INSTRUCTION, pb.Instruction):
            add_usage(total, instruction.usage)
        async for rejected in items.scan(job_id, ItemKind.REJECTED, pb.Instruction):
            add_usage(total, rejected.usage)
        async for response in items.scan(job_id, ItemKind.RESPONSE, pb.Response):
            add_usage(total, response.usage)
        async for score in items.scan(job_id, ItemKind.SCORE, pb.Score):
            add_usage(total, score.call.usage)
        return total
