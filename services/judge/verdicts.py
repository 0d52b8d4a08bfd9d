"""The judge model's verdicts: the replies it must give, one two-score verdict asked with its
texts fenced, and what a score difference says.

Candidate texts are untrusted: every prompt places them between markers carrying a code their
authors cannot know (:mod:`taxoforge.markers`: derived from the job's secret and the verdict's
ids, so the same verdict asked again is the same request, answered from the request cache),
removes that code from the texts, and tells the judge they are data. A reply that never
validates is recorded as a judge failure, never as a score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field

from taxoforge.languages import language_name
from taxoforge.llm import LLMClient
from taxoforge.markers import fence_for
from taxoforge.prompts import PromptTemplate
from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "MAX_RATIONALE",
    "PROMPTS",
    "PairVerdict",
    "RubricVerdict",
    "TenVerdict",
    "Verdict",
    "ask_on_responses",
    "ask_two",
    "verdict_of",
]

PROMPTS = Path(__file__).parent / "prompts"
MAX_RATIONALE = 600

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


async def ask_two(
    llm: LLMClient,
    template: PromptTemplate,
    output: type[TenVerdict] | type[PairVerdict],
    cfg: pb.ModelConfig,
    ids: tuple[str | int | bool, ...],
    language: str,
    **texts: str,
) -> Verdict:
    """One two-score verdict: every text fenced with the marker of ``ids`` (what the verdict
    is on), the reply validated."""
    marker = await fence_for(*(str(i) for i in ids))
    fenced = {name: marker.clean(text) for name, text in texts.items()}
    messages = template.render(nonce=marker.marker, language=language, **fenced)
    verdict, call = await llm.structured(
        "judge", cfg, messages, output, max_tokens=320, cache=marker.stable
    )
    rationale = verdict.rationale.strip()[:MAX_RATIONALE]
    return float(verdict.score_1), float(verdict.score_2), rationale, template.stamp(call)


async def ask_on_responses(
    llm: LLMClient,
    template: PromptTemplate,
    output: type[TenVerdict] | type[PairVerdict],
    cfg: pb.ModelConfig,
    instruction: pb.Instruction,
    first: pb.Response,
    second: pb.Response,
    again: bool = False,
) -> Verdict:
    """One verdict on two responses to ``instruction``, ``first`` shown first.

    ``again``: a second verdict on the same order (an inconsistent pair's third opinion),
    which must not be the first one's cached reply.
    """
    return await ask_two(
        llm,
        template,
        output,
        cfg,
        (template.name, instruction.item_id, instruction.version, first.id, second.id, again),
        language=language_name(instruction.seed.language or "en"),
        instruction=instruction.text,
        first=first.text,
        second=second.text,
    )


def verdict_of(diff: float) -> str:
    """Which answer a score difference (A's minus B's) prefers: "a", "b" or "tie"."""
    return "a" if diff > 0 else "b" if diff < 0 else "tie"
