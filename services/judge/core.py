"""Rubric scoring and preference pairs."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from taxoforge.languages import language_name
from taxoforge.llm import LLMClient
from taxoforge.prompts import load_template
from taxoforge.v1 import common_pb2 as pb

__all__ = ["Judge", "RubricVerdict", "build_judgment", "fence", "pick_pair"]

_PROMPTS = Path(__file__).parent / "prompts"
_MAX_RATIONALE = 600


class RubricVerdict(BaseModel):
    """What the judge must reply: a short rationale, then an integer score 1-10."""

    # The length is a hint for constrained decoders (it makes a small model stop); replies that
    # run longer are kept and cut, not refused.
    rationale: str = Field(json_schema_extra={"maxLength": 400})
    # Strict: true is not a score of 1, nor "7" a score of 7; such a reply is asked again.
    # The enum lets grammar-constrained servers (llama.cpp) produce only valid scores.
    score: int = Field(ge=1, le=10, strict=True, json_schema_extra={"enum": list(range(1, 11))})


def fence(text: str, nonce: str) -> str:
    """Candidate text made safe to place between markers carrying ``nonce``."""
    return text.replace(nonce, "[marker removed]")


class Judge:
    """Scores one response at a time against its instruction."""

    def __init__(self, llm: LLMClient) -> None:
        self._llm = llm
        self._rubric = load_template(_PROMPTS / "rubric.yaml")

    async def score(
        self, instruction: pb.Instruction, response: pb.Response, cfg: pb.ModelConfig
    ) -> pb.Score:
        """A 1-10 rubric score with rationale.

        Raises:
            StructuredOutputError: the judge never replied with a valid verdict (never a score).
        """
        nonce = secrets.token_hex(6)
        messages = self._rubric.render(
            nonce=nonce,
            language=language_name(instruction.seed.language or "en"),
            instruction=fence(instruction.text, nonce),
            response=fence(response.text, nonce),
        )
        verdict, call = await self._llm.structured(
            "judge", cfg, messages, RubricVerdict, temperature=None, max_tokens=256
        )
        return pb.Score(
            response_id=response.id,
            score=float(verdict.score),
            rationale=verdict.rationale.strip()[:_MAX_RATIONALE],
            call=self._rubric.stamp(call),
        )


def pick_pair(scores: Sequence[pb.Score], min_margin: float) -> pb.PreferencePair | None:
    """Best against worst, when they differ by at least ``min_margin`` (and never on a tie)."""
    if len(scores) < 2:
        return None
    ranked = sorted(scores, key=lambda s: (-s.score, s.response_id))
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


def build_judgment(
    candidates: pb.Candidates, scores: Sequence[pb.Score], min_margin: float
) -> pb.Judgment:
    """The item's judgment: every candidate with its score, and the pair if there is one."""
    instruction = candidates.instruction
    judgment = pb.Judgment(
        job_id=instruction.job_id,
        item_id=instruction.item_id,
        instruction=instruction,
        responses=candidates.responses,
        scores=scores,
    )
    pair = pick_pair(scores, min_margin)
    if pair is not None:
        judgment.pair.CopyFrom(pair)
    return judgment
