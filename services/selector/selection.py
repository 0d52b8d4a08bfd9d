"""Running selection for a finished job: read its items, select, write its datasets."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

import grpc
import structlog

from services.selector.core import Record, select
from services.selector.report import count_items, golden_agreement, judge_health, usage_of
from taxoforge.datasets import DatasetStore, dataset_object
from taxoforge.errors import TransientError
from taxoforge.service import ServiceContext
from taxoforge.store import TERMINAL_STATES, ItemKind
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import judge_pb2 as jpb
from taxoforge.v1 import judge_pb2_grpc

__all__ = ["SelectionRunner"]

log = structlog.get_logger(__name__)

_TOP_REASONS = 5
_GOLDEN_TIMEOUT_S = 600.0


class SelectionRunner:
    """Selects a job's records and writes its datasets; running it twice gives the same files."""

    def __init__(self, ctx: ServiceContext, judge_addr: str) -> None:
        self._ctx = ctx
        self._datasets = DatasetStore(ctx.bus)
        self._judge_addr = judge_addr

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
        count_items(report, judgments)
        rejected = [r async for r in items.scan(job.id, ItemKind.REJECTED, pb.Instruction)]
        for instruction in rejected:
            for rejection in instruction.rejections:
                report.rejections[rejection.reason] += 1
        versions = [v async for v in items.scan(job.id, ItemKind.JUDGED, pb.Judgment)]
        report.judge.CopyFrom(judge_health(judgments, versions))
        if job.recipe.judging.golden:
            await self._golden(job, report.judge)
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
        report.usage.CopyFrom(await self._exact_usage(job.id, rejected, versions))

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

    async def _exact_usage(
        self, job_id: str, rejected: list[pb.Instruction], versions: list[pb.Judgment]
    ) -> pb.Usage:
        """Every recorded call behind the job's items, counted once."""
        items = self._ctx.items
        latest: dict[str, pb.Instruction] = {}
        async for instruction in items.scan(job_id, ItemKind.INSTRUCTION, pb.Instruction):
            latest[instruction.item_id] = instruction
        async for refined in items.scan(job_id, ItemKind.REFINED, pb.Instruction):
            known = latest.get(refined.item_id)
            if known is None or refined.version > known.version:
                latest[refined.item_id] = refined
        responses = [r async for r in items.scan(job_id, ItemKind.RESPONSE, pb.Response)]
        scores = [s async for s in items.scan(job_id, ItemKind.SCORE, pb.Score)]
        return usage_of([*latest.values(), *rejected], responses, scores, versions)

    async def _golden(self, job: pb.Job, health: pb.JudgeHealth) -> None:
        """The judge on the job's labelled pairs: accuracy and Cohen's kappa."""
        config = pb.JudgeConfig()
        config.CopyFrom(job.recipe.judging)
        config.mode, config.inconsistent = "pairwise", "tie"
        del config.golden[:]
        requests = []
        for i, pair in enumerate(job.recipe.judging.golden):
            instruction = pb.Instruction(text=pair.instruction, item_id=f"golden{i}")
            instruction.seed.language = (
                job.recipe.languages[0].code if job.recipe.languages else "en"
            )
            candidates = pb.Candidates(
                instruction=instruction,
                responses=[pb.Response(id="a", text=pair.a), pb.Response(id="b", text=pair.b)],
            )
            requests.append(
                jpb.JudgeCandidatesRequest(
                    candidates=candidates, judge=job.recipe.models.judge, config=config
                )
            )
        try:
            async with grpc.aio.insecure_channel(self._judge_addr) as channel:
                stub = judge_pb2_grpc.JudgeServiceStub(channel)
                resp = await stub.JudgeBatch(
                    jpb.JudgeBatchRequest(requests=requests), timeout=_GOLDEN_TIMEOUT_S
                )
        except grpc.aio.AioRpcError as exc:
            log.warning("golden_set_not_judged", error=exc.details())
            return
        predicted = [j.comparisons[0].verdict if j.comparisons else "tie" for j in resp.judgments]
        golden_agreement(health, predicted, [p.preferred for p in job.recipe.judging.golden])
