"""Judging (design §1): rubric scores, pairwise comparisons in both orders, CodecLM
contrastive filtering, and TaP-style preference pairs.

Candidate texts are untrusted: every prompt places them between markers carrying a code their
authors cannot know (:mod:`taxoforge.markers`: derived from the job's secret and the verdict's
ids, so the same verdict asked again is the same request, answered from the request cache),
removes that code from the texts, and tells the judge they are data. A reply that never
validates is recorded as a judge failure, never as a score.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from itertools import combinations
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field

from taxoforge.languages import language_name
from taxoforge.llm import LLMClient, StructuredOutputError
from taxoforge.markers import fence, fence_for
from taxoforge.methods import MAX_SELF_RUBRICS_ROUNDS
from taxoforge.prompts import PromptTemplate, load_template
from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "ASPECTS",
    "Judge",
    "PairVerdict",
    "Panel",
    "RubricVerdict",
    "build_judgment",
    "fence",
    "pick_pair",
    "rank_pair",
]

_PROMPTS = Path(__file__).parent / "prompts"
_MAX_RATIONALE = 600
ASPECTS = ("helpfulness", "correctness", "instruction_following", "honesty", "language_match")
DEFAULT_DISAGREEMENT = 30.0
DEFAULT_GAP = 3.0


# Strict: true is not a score of 1, nor "7" a score of 7; such a reply is asked again. The enum
# lets grammar-constrained servers (llama.cpp) produce only valid scores.
Ten = Annotated[
    int, Field(ge=1, le=10, strict=True, json_schema_extra={"enum": list(range(1, 11))})
]
Hundred = Annotated[
    int, Field(ge=1, le=100, strict=True, json_schema_extra={"enum": list(range(1, 101))})
]


class RubricVerdict(BaseModel):
    """The rubric reply: a short rationale, a score per aspect, an overall score, all 1-10."""

    # The length is a hint for constrained decoders (it makes a small model stop); replies that
    # run longer are kept and cut, not refused.
    rationale: str = Field(json_schema_extra={"maxLength": 400})
    helpfulness: Ten
    correctness: Ten
    instruction_following: Ten
    honesty: Ten
    language_match: Ten
    score: Ten


class PairVerdict(BaseModel):
    """The pairwise reply: a rationale and both answers' scores, 1-100."""

    rationale: str = Field(json_schema_extra={"maxLength": 400})
    score_1: Hundred
    score_2: Hundred


class TenVerdict(BaseModel):
    """The contrastive reply (CodecLM's pairwise template): both answers' scores, 1-10."""

    rationale: str = Field(json_schema_extra={"maxLength": 300})
    score_1: Ten
    score_2: Ten


# Both scores of one verdict, its rationale and the call.
Verdict = tuple[float, float, str, pb.LLMCall]


class Judge:
    """The judge's model calls, one verdict each."""

    def __init__(self, llm: LLMClient) -> None:
        self._llm = llm
        self._rubric = load_template(_PROMPTS / "rubric.yaml")
        self._pairwise = load_template(_PROMPTS / "pairwise.yaml")
        self._contrastive = load_template(_PROMPTS / "contrastive.yaml")
        self._samples = load_template(_PROMPTS / "samples.yaml")

    async def score(
        self, instruction: pb.Instruction, response: pb.Response, cfg: pb.ModelConfig
    ) -> pb.Score:
        """A 1-10 rubric score with aspect scores and a rationale; ``failed`` if the judge never
        gave a valid verdict (then there is no score)."""
        marker = await fence_for("rubric", instruction.item_id, instruction.version, response.id)
        messages = self._rubric.render(
            nonce=marker.marker,
            language=language_name(instruction.seed.language or "en"),
            instruction=marker.clean(instruction.text),
            response=marker.clean(response.text),
        )
        try:
            verdict, call = await self._llm.structured(
                "judge", cfg, messages, RubricVerdict, max_tokens=320, cache=marker.stable
            )
        except StructuredOutputError as exc:
            return pb.Score(
                response_id=response.id,
                failed=True,
                rationale=str(exc)[:_MAX_RATIONALE],
                call=self._rubric.stamp(exc.call),
            )
        out = pb.Score(
            response_id=response.id,
            score=float(verdict.score),
            rationale=verdict.rationale.strip()[:_MAX_RATIONALE],
            call=self._rubric.stamp(call),
        )
        for aspect in ASPECTS:
            out.aspects[aspect] = float(getattr(verdict, aspect))
        return out

    async def _two(
        self,
        instruction: pb.Instruction,
        first: pb.Response,
        second: pb.Response,
        cfg: pb.ModelConfig,
        contrastive: bool = False,
        again: bool = False,
    ) -> tuple[float, float, str, pb.LLMCall]:
        """One verdict on (first, second) in that order: both scores, rationale, call.

        ``again``: a second verdict on the same order (an inconsistent pair's third opinion),
        which must not be the first one's cached reply.
        """
        template = self._contrastive if contrastive else self._pairwise
        return await self._ask(
            template,
            TenVerdict if contrastive else PairVerdict,
            cfg,
            (template.name, instruction.item_id, instruction.version, first.id, second.id, again),
            language=language_name(instruction.seed.language or "en"),
            instruction=instruction.text,
            first=first.text,
            second=second.text,
        )

    async def _ask(
        self,
        template: PromptTemplate,
        output: type[TenVerdict] | type[PairVerdict],
        cfg: pb.ModelConfig,
        ids: tuple[str | int | bool, ...],
        language: str,
        **texts: str,
    ) -> tuple[float, float, str, pb.LLMCall]:
        """One two-score verdict: every text fenced with the marker of ``ids`` (what the verdict
        is on), the reply validated."""
        marker = await fence_for(*(str(i) for i in ids))
        fenced = {name: marker.clean(text) for name, text in texts.items()}
        messages = template.render(nonce=marker.marker, language=language, **fenced)
        verdict, call = await self._llm.structured(
            "judge", cfg, messages, output, max_tokens=320, cache=marker.stable
        )
        rationale = verdict.rationale.strip()[:_MAX_RATIONALE]
        return float(verdict.score_1), float(verdict.score_2), rationale, template.stamp(call)

    async def compare_samples(
        self, sample: pb.Sample, reference: pb.Sample, cfg: pb.ModelConfig, language: str
    ) -> pb.Comparison:
        """TACOS comparative scoring: a sample (A) against its cluster's reference (B) as
        training data, 1-100, in both orders at once; the orders' means are the scores. A judge
        that never answers validly gives a failed comparison, never a score."""
        out = pb.Comparison(a_id=sample.id, b_id=reference.id, swapped=True)

        def ask(first: pb.Sample, second: pb.Sample) -> Awaitable[Verdict]:
            return self._ask(
                self._samples,
                PairVerdict,
                cfg,
                (self._samples.name, first.id, second.id),
                language=language_name(language or "en"),
                query_1=first.query,
                response_1=first.response,
                query_2=second.query,
                response_2=second.response,
            )

        ab, ba = await asyncio.gather(
            ask(sample, reference), ask(reference, sample), return_exceptions=True
        )
        calls = [r[3] for r in (ab, ba) if isinstance(r, tuple)]
        for result in (ab, ba):
            if isinstance(result, StructuredOutputError):
                out.failed, out.verdict, out.error = True, "tie", str(result)[:_MAX_RATIONALE]
                out.calls.extend([*calls, result.call])
                return out
            if isinstance(result, BaseException):
                raise result
        assert isinstance(ab, tuple) and isinstance(ba, tuple)
        (a1, b1, why1, _), (b2, a2, why2, _) = ab, ba
        out.a_first_a, out.a_first_b, out.rationale_a_first = a1, b1, why1
        out.b_first_a, out.b_first_b, out.rationale_b_first = a2, b2, why2
        out.calls.extend(calls)
        out.a, out.b = (a1 + a2) / 2, (b1 + b2) / 2
        first, second = a1 - b1, a2 - b2
        out.inconsistent = abs(first - second) > DEFAULT_DISAGREEMENT or (
            _verdict(first) != _verdict(second) and "tie" not in (_verdict(first), _verdict(second))
        )
        out.verdict = _verdict(out.a - out.b)
        return out

    async def compare(
        self,
        instruction: pb.Instruction,
        a: pb.Response,
        b: pb.Response,
        cfg: pb.ModelConfig,
        config: pb.JudgeConfig,
        rng: random.Random,
    ) -> pb.Comparison:
        """A and B on 1-100, A first then B first (unless ``no_swap``); the orders' means are the
        scores. Orders that disagree beyond ``disagreement`` make the pair inconsistent, and
        the policy decides its verdict."""
        out = pb.Comparison(a_id=a.id, b_id=b.id, swapped=not config.no_swap)
        try:
            return await self._compare(instruction, a, b, cfg, config, rng, out)
        except StructuredOutputError as exc:
            # A judge failure, never a score: the comparison counts as a tie and is reported.
            failed = pb.Comparison(a_id=a.id, b_id=b.id, swapped=out.swapped, failed=True)
            failed.verdict, failed.error = "tie", str(exc)[:_MAX_RATIONALE]
            failed.calls.extend([*out.calls, exc.call])
            return failed

    async def _compare(
        self,
        instruction: pb.Instruction,
        a: pb.Response,
        b: pb.Response,
        cfg: pb.ModelConfig,
        config: pb.JudgeConfig,
        rng: random.Random,
        out: pb.Comparison,
    ) -> pb.Comparison:
        if config.no_swap:
            a1, b1, why, call = await self._two(instruction, a, b, cfg)
            out.a_first_a, out.a_first_b, out.rationale_a_first = a1, b1, why
            out.calls.append(call)
            out.a, out.b = a1, b1
            out.verdict = _verdict(a1 - b1)
            return out
        # Both orders at once: a pair costs one model latency, not two.
        order_ab, order_ba = await asyncio.gather(
            self._two(instruction, a, b, cfg),
            self._two(instruction, b, a, cfg),
            return_exceptions=True,
        )
        for result in (order_ab, order_ba):
            if isinstance(result, StructuredOutputError):
                for other in (order_ab, order_ba):  # the order that did answer was paid for too
                    if isinstance(other, tuple):
                        out.calls.append(other[3])
                raise result
            if isinstance(result, BaseException):
                raise result
        assert isinstance(order_ab, tuple) and isinstance(order_ba, tuple)
        (a1, b1, why1, call1), (b2, a2, why2, call2) = order_ab, order_ba
        out.a_first_a, out.a_first_b, out.rationale_a_first = a1, b1, why1
        out.b_first_a, out.b_first_b, out.rationale_b_first = a2, b2, why2
        out.calls.extend([call1, call2])
        out.a, out.b = (a1 + a2) / 2, (b1 + b2) / 2
        first, second = a1 - b1, a2 - b2
        limit = config.disagreement or DEFAULT_DISAGREEMENT
        opposite = _verdict(first) != _verdict(second) and "tie" not in (
            _verdict(first),
            _verdict(second),
        )
        out.inconsistent = opposite or abs(first - second) > limit
        if not out.inconsistent:
            out.verdict = _verdict(out.a - out.b)
            return out
        policy = config.inconsistent or "tie"
        if policy == "third":
            if rng.random() < 0.5:
                a3, b3, _, call = await self._two(instruction, a, b, cfg, again=True)
            else:
                b3, a3, _, call = await self._two(instruction, b, a, cfg, again=True)
            out.calls.append(call)
            out.verdict = _verdict(a3 - b3)
        else:
            out.verdict = "tie"  # "tie", and "drop" (the item then leaves the datasets)
        return out

    async def contrastive(
        self,
        instruction: pb.Instruction,
        strong: pb.Response,
        target: pb.Response,
        cfg: pb.ModelConfig,
        gap: float,
        rounds_left: bool,
    ) -> tuple[pb.ContrastiveRound, list[pb.LLMCall]]:
        """CodecLM contrastive filtering: both answers scored 1-10 in both orders and averaged;
        G = strong - target. |G| > gap keeps the instruction (with the better answer);
        otherwise it goes back for another Self-Rubrics round while rounds are left."""
        (s1, t1, _, first), (t2, s2, _, second) = await asyncio.gather(
            self._two(instruction, strong, target, cfg, contrastive=True),
            self._two(instruction, target, strong, cfg, contrastive=True),
        )
        out = pb.ContrastiveRound(
            version=instruction.version,
            strong_id=strong.id,
            target_id=target.id,
            strong_score=(s1 + s2) / 2,
            target_score=(t1 + t2) / 2,
        )
        out.gap = out.strong_score - out.target_score
        if abs(out.gap) > gap:
            out.decision = "keep_strong" if out.gap > 0 else "keep_target"
        else:
            out.decision = "refine" if rounds_left else "exhausted"
        out.calls.extend([first, second])
        return out, [first, second]


def _verdict(diff: float) -> str:
    return "a" if diff > 0 else "b" if diff < 0 else "tie"


def pick_pair(scores: Sequence[pb.Score], min_margin: float) -> pb.PreferencePair | None:
    """Best against worst, when they differ by at least ``min_margin`` (and never on a tie).

    Failed scores (no valid verdict) never enter a pair.
    """
    valid = [s for s in scores if not s.failed]
    if len(valid) < 2:
        return None
    ranked = sorted(valid, key=lambda s: (-s.score, s.response_id))
    best, worst = ranked[0], ranked[-1]
    margin = best.score - worst.score
    if margin <= 0 or margin < min_margin:
        return None
    return pb.PreferencePair(
        chosen_id=best.response_id,
        rejected_id=worst.response_id,
        chosen_score=best.score,
        rejected_score=worst.score,
        margin=margin,
    )


def pairwise_scores(
    responses: Sequence[pb.Response], comparisons: Sequence[pb.Comparison]
) -> list[pb.Score]:
    """Each candidate's mean score over its comparisons (1-100)."""
    totals: dict[str, list[float]] = {r.id: [] for r in responses}
    for c in comparisons:
        if c.failed:
            continue
        totals[c.a_id].append(c.a)
        totals[c.b_id].append(c.b)
    return [
        pb.Score(response_id=rid, score=sum(v) / len(v), failed=not v)
        if v
        else pb.Score(response_id=rid, failed=True)
        for rid, v in totals.items()
    ]


def rank_pair(
    scores: Sequence[pb.Score], comparisons: Sequence[pb.Comparison], min_margin: float
) -> pb.PreferencePair | None:
    """Pairwise mode's pair: best against worst by mean score, if the comparison between the
    two (after its inconsistency policy) prefers the best and the margin holds."""
    pair = pick_pair(scores, min_margin)
    if pair is None:
        return None
    for c in comparisons:
        if {c.a_id, c.b_id} == {pair.chosen_id, pair.rejected_id}:
            winner = c.a_id if c.verdict == "a" else c.b_id if c.verdict == "b" else ""
            return pair if winner == pair.chosen_id else None
    return pair


def all_pairs(responses: Sequence[pb.Response]) -> list[tuple[pb.Response, pb.Response]]:
    """Every unordered pair of candidates, in a stable order."""
    return list(combinations(responses, 2))


def build_judgment(
    candidates: pb.Candidates,
    scores: Sequence[pb.Score],
    min_margin: float,
    comparisons: Sequence[pb.Comparison] = (),
    config: pb.JudgeConfig | None = None,
) -> pb.Judgment:
    """The item's judgment: every candidate with its score, comparisons, and the pair if any."""
    instruction = candidates.instruction
    mode = (config.mode if config else "") or "rubric"
    judgment = pb.Judgment(
        job_id=instruction.job_id,
        item_id=instruction.item_id,
        instruction=instruction,
        responses=candidates.responses,
        scores=scores,
        comparisons=comparisons,
        mode=mode,
        usable=True,
    )
    # Preference pairs come from the responders' candidates; CodecLM's target answer is only
    # there to be compared with (contrastive filtering), and is taught only if it is kept.
    responders = {r.id for r in candidates.responses if r.responder >= 0}
    pairable = [s for s in scores if s.response_id in responders]
    if mode == "pairwise":
        pair = rank_pair(pairable, comparisons, min_margin)
        if (
            config is not None
            and config.inconsistent == "drop"
            and any(c.inconsistent for c in comparisons)
        ):
            judgment.usable = False
            judgment.unusable_reason = "an inconsistent comparison (policy: drop)"
    else:
        pair = pick_pair(pairable, min_margin)
    if pair is not None:
        judgment.pair.CopyFrom(pair)
    return judgment


ScoreFn = Callable[[pb.Instruction, pb.Response], Awaitable[pb.Score]]


class Panel:
    """One item's whole judging: rubric scores or pairwise comparisons of the responders'
    candidates, the pair, and (when the target answered) contrastive filtering."""

    def __init__(self, judge: Judge) -> None:
        self._judge = judge

    async def run(
        self,
        candidates: pb.Candidates,
        cfg: pb.ModelConfig,
        config: pb.JudgeConfig,
        min_margin: float,
        rng: random.Random,
        contrastive: bool = False,
        score: ScoreFn | None = None,
    ) -> pb.Judgment:
        """Judge the candidates (the model client counts every call in the job's usage).

        Args:
            score: how one candidate gets its rubric score (the worker stores each once).
        """
        instruction = candidates.instruction
        strong = [r for r in candidates.responses if r.responder >= 0]
        comparisons: list[pb.Comparison] = []
        if config.mode == "pairwise":
            comparisons = list(
                await asyncio.gather(
                    *(
                        self._judge.compare(instruction, a, b, cfg, config, rng)
                        for a, b in all_pairs(strong)
                    )
                )
            )
            scores = pairwise_scores(strong, comparisons)
        else:
            one = score or (lambda i, r: self._judge.score(i, r, cfg))
            scores = list(
                await asyncio.gather(*(one(instruction, r) for r in candidates.responses))
            )
        judgment = build_judgment(candidates, scores, min_margin, comparisons, config)
        target = next((r for r in candidates.responses if r.responder < 0), None)
        if contrastive and target is not None and strong:
            limit = config.contrastive_gap or DEFAULT_GAP
            decision, _ = await self._judge.contrastive(
                instruction,
                _best(strong, scores),
                target,
                cfg,
                limit,
                rounds_left=len(instruction.rounds) < MAX_SELF_RUBRICS_ROUNDS,
            )
            judgment.contrastive.CopyFrom(decision)
            if decision.decision == "exhausted":
                judgment.usable = False
                judgment.unusable_reason = (
                    f"contrastive gap {decision.gap:.1f} stayed within {limit:g} "
                    f"after {len(instruction.rounds)} Self-Rubrics rounds"
                )
        return judgment


def _best(responses: Sequence[pb.Response], scores: Sequence[pb.Score]) -> pb.Response:
    by_id = {s.response_id: s for s in scores if not s.failed}
    return max(responses, key=lambda r: (by_id[r.id].score if r.id in by_id else -1.0, r.id))
