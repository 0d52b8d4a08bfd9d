"""Rubric judging: each candidate scored 1-10 on five aspects and overall, and the preference
pair the scores make (best against worst)."""

from __future__ import annotations

from collections.abc import Sequence

from services.judge.verdicts import MAX_RATIONALE, PROMPTS, RubricVerdict, VerdictRules, checked
from taxoforge.languages import language_name
from taxoforge.llm import LLMClient, StructuredOutputError
from taxoforge.markers import fence_for
from taxoforge.prompts import load_template
from taxoforge.stage import cache_use
from taxoforge.v1 import common_pb2 as pb

__all__ = ["ASPECTS", "Rubric", "pick_pair"]

ASPECTS = ("helpfulness", "correctness", "instruction_following", "honesty", "language_match")


class Rubric:
    """The rubric's model call, one verdict per candidate."""

    def __init__(self, llm: LLMClient, rules: VerdictRules | None = None) -> None:
        self._llm = llm
        self._template = load_template(PROMPTS / "rubric.yaml")
        self._verdict = checked(RubricVerdict, rules or VerdictRules())

    async def score(
        self, instruction: pb.Instruction, response: pb.Response, cfg: pb.ModelConfig
    ) -> pb.Score:
        """A 1-10 rubric score with aspect scores and a rationale; ``failed`` if the judge never
        gave a valid verdict (then there is no score)."""
        marker = await fence_for("rubric", instruction.item_id, instruction.version, response.id)
        messages = self._template.render(
            nonce=marker.marker,
            language=language_name(instruction.seed.language or "en"),
            instruction=marker.clean(instruction.text),
            response=marker.clean(response.text),
        )
        try:
            verdict, call = await self._llm.structured(
                "judge", cfg, messages, self._verdict, max_tokens=320, cache=cache_use(marker)
            )
        except StructuredOutputError as exc:
            return pb.Score(
                response_id=response.id,
                failed=True,
                rationale=str(exc)[:MAX_RATIONALE],
                call=self._template.stamp(exc.call),
            )
        out = pb.Score(
            response_id=response.id,
            score=float(verdict.score),
            rationale=verdict.rationale.strip()[:MAX_RATIONALE],
            call=self._template.stamp(call),
        )
        for aspect in ASPECTS:
            out.aspects[aspect] = float(getattr(verdict, aspect))
        return out


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
