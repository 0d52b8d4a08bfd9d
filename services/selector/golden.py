"""A job's golden set: its labelled pairs judged by the job's judge, in batches the judge
service accepts, and the agreement, calls and usage in the job's report.

The pairs are judged pairwise in both orders with the tie policy (an inconsistent pair is a
tie, so position bias shows as misses). Their calls are the job's like any other: they count
in the report's judge health and usage. A pair the judge gave no valid verdict for, or that
could not be asked at all, is a miss, counted in ``golden_failures`` and explained in
``golden_error``; a golden set is never reported as judged when it was not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import structlog

from services.selector.report import golden_agreement, judge_health, merge_health, usage_of
from taxoforge.grpc_server import client_channel
from taxoforge.llm.metering import add_usage
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import judge_pb2 as jpb
from taxoforge.v1 import judge_pb2_grpc

__all__ = ["BATCH", "golden_requests", "golden_verdicts", "judge_golden"]

log = structlog.get_logger(__name__)

# The judge service's JudgeBatch limit (services/judge/servicer.py); services never import each
# other, so it is repeated here.
BATCH = 64
# Batches asked at once: the judge runs a batch's pairs concurrently already.
_PARALLEL = 2
_TIMEOUT_S = 600.0


def golden_requests(job: pb.Job) -> list[jpb.JudgeCandidatesRequest]:
    """One pairwise request per golden pair, answers "a" and "b" in the labelled order."""
    config = pb.JudgeConfig()
    config.CopyFrom(job.recipe.judging)
    config.mode, config.inconsistent = "pairwise", "tie"
    del config.golden[:]
    language = job.recipe.languages[0].code if job.recipe.languages else "en"
    requests = []
    for i, pair in enumerate(job.recipe.judging.golden):
        instruction = pb.Instruction(text=pair.instruction, item_id=f"golden{i}")
        instruction.seed.language = language
        candidates = pb.Candidates(
            instruction=instruction,
            responses=[pb.Response(id="a", text=pair.a), pb.Response(id="b", text=pair.b)],
        )
        requests.append(
            jpb.JudgeCandidatesRequest(
                candidates=candidates, judge=job.recipe.models.judge, config=config
            )
        )
    return requests


def golden_verdicts(judgments: Sequence[pb.Judgment | None]) -> tuple[list[str], int]:
    """Each pair's verdict ("a", "b" or "tie") and how many pairs have no valid one (not
    judged, or the judge never answered validly): those count as ties, i.e. as misses."""
    predicted, failures = [], 0
    for judgment in judgments:
        comparison = judgment.comparisons[0] if judgment and judgment.comparisons else None
        if comparison is None or comparison.failed:
            failures += 1
            predicted.append("tie")
        else:
            predicted.append(comparison.verdict or "tie")
    return predicted, failures


async def judge_golden(job: pb.Job, report: pb.SelectionReport, judge_addr: str) -> None:
    """Judge the job's golden set and record it in ``report``: agreement (accuracy, Cohen's
    kappa) in its judge health, the golden calls in that health and in its usage."""
    requests = golden_requests(job)
    if not requests:
        return
    batches = [requests[i : i + BATCH] for i in range(0, len(requests), BATCH)]
    results: list[list[pb.Judgment] | None] = [None] * len(batches)
    errors: list[str] = []
    sem = asyncio.Semaphore(_PARALLEL)
    try:
        async with client_channel(judge_addr) as channel:
            stub = judge_pb2_grpc.JudgeServiceStub(channel)

            async def _batch(n: int) -> None:
                async with sem:
                    try:
                        resp = await stub.JudgeBatch(
                            jpb.JudgeBatchRequest(requests=batches[n], job_id=job.id),
                            timeout=_TIMEOUT_S,
                        )
                    except grpc.aio.AioRpcError as exc:
                        log.warning("golden_batch_not_judged", batch=n, error=exc.details())
                        errors.append(
                            f"pairs {n * BATCH + 1}-{n * BATCH + len(batches[n])}: "
                            f"{exc.code().name} {exc.details() or ''}".strip()
                        )
                        return
                if len(resp.judgments) != len(batches[n]):
                    errors.append(
                        f"batch {n + 1}: {len(resp.judgments)} verdicts for {len(batches[n])} pairs"
                    )
                    return
                results[n] = list(resp.judgments)

            await asyncio.gather(*(_batch(n) for n in range(len(batches))))
    except (grpc.aio.AioRpcError, OSError) as exc:  # the channel itself failed
        errors.append(f"the judge service could not be reached: {exc}")
    judged: list[pb.Judgment] = []
    per_pair: list[pb.Judgment | None] = []
    for n, batch in enumerate(batches):
        got = results[n]
        judged.extend(got or [])
        per_pair.extend(got if got is not None else [None] * len(batch))
    health = report.judge
    merge_health(health, judge_health(judged, judged))
    add_usage(report.usage, usage_of([], [], [], judged))
    predicted, failures = golden_verdicts(per_pair)
    golden_agreement(health, predicted, [p.preferred for p in job.recipe.judging.golden])
    health.golden_failures = failures
    if errors:
        health.golden_error = "; ".join(sorted(errors))[:1000]
    elif failures:
        health.golden_error = (
            f"the judge gave no valid verdict for {failures} of {len(requests)} pairs"
        )
