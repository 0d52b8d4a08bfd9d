"""The judge model's verdicts: the replies it must give, one two-score verdict asked with its
texts fenced, and what a score difference says.

Candidate texts are untrusted: every prompt places them between markers carrying a code their
authors cannot know (:mod:`taxoforge.markers`: derived from the job's secret and the verdict's
ids, so the same verdict asked again is the same request, answered from the request cache),
removes that code from the texts, and tells the judge they are data. A reply that never
validates is recorded as a judge failure, never as a score.

A reply is checked for substance as well as shape (:class:`VerdictRules`): a rationale with no
words in it (``"]["``), or rubric aspect scores that contradict the overall score, makes the
reply invalid, so the client asks again and counts it as an invalid reply, as it does a reply
that is not JSON. Identical scores for two answers are not invalid by themselves: a judge may
find two answers equally good, and only a contradiction inside one reply is certain.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, ClassVar, TypeVar

from pydantic import BaseModel, Field, model_validator

from taxoforge.languages import language_name
from taxoforge.llm import LLMClient
from taxoforge.markers import fence_for
from taxoforge.prompts import PromptTemplate
from taxoforge.stage import cache_use
from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "MAX_RATIONALE",
    "PROMPTS",
    "PairVerdict",
    "RubricVerdict",
    "TenVerdict",
    "Verdict",
    "VerdictRules",
    "ask_on_responses",
    "ask_two",
    "checked",
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


@dataclass(frozen=True)
class VerdictRules:
    """What makes a well-formed reply a usable one.

    ``aspect_tolerance``: how far (1-10 points) a rubric's overall score may lie outside the
    range of its aspect scores; an overall of 1 with every aspect at 10 is a contradiction,
    an overall a little under the lowest aspect is a judgement call. ``min_rationale_letters``:
    letters a rationale needs (any script), so punctuation or a bare number is no rationale.
    """

    aspect_tolerance: float = 2.0
    min_rationale_letters: int = 2


class _Checked(BaseModel):
    """A reply whose substance is checked against ``rules`` (see :func:`checked`)."""

    rules: ClassVar[VerdictRules] = VerdictRules()

    @model_validator(mode="after")
    def _has_a_rationale(self) -> _Checked:
        rationale = str(getattr(self, "rationale", ""))
        letters = sum(ch.isalpha() for ch in rationale)
        if letters < self.rules.min_rationale_letters:
            raise ValueError(
                f"the rationale {rationale.strip()[:40]!r} gives no reason "
                f"({letters} letters; at least {self.rules.min_rationale_letters})"
            )
        return self


V = TypeVar("V", bound=_Checked)


@cache
def checked(output: type[V], rules: VerdictRules) -> type[V]:
    """``output`` validated under ``rules``: a subclass of the same name and schema, so the
    request (and its cache entry) is the same whatever the rules."""
    if rules == output.rules:
        return output
    namespace = {"rules": rules, "__module__": output.__module__, "__doc__": output.__doc__}
    return type(output.__name__, (output,), namespace)


class RubricVerdict(_Checked):
    """The rubric reply: a short rationale, a score per aspect, an overall score, all 1-10."""

    # (The docstring is the schema's description, which the model reads.) The overall score
    # must agree with the aspects: at most the rules' tolerance below the lowest aspect or
    # above the highest, since one bad aspect may rightly pull the overall down to it.

    # The length is a hint for constrained decoders (it makes a small model stop); replies that
    # run longer are kept and cut, not refused.
    rationale: str = Field(json_schema_extra={"maxLength": 400})
    helpfulness: Ten
    correctness: Ten
    instruction_following: Ten
    honesty: Ten
    language_match: Ten
    score: Ten

    @model_validator(mode="after")
    def _agrees_with_aspects(self) -> RubricVerdict:
        aspects = [
            self.helpfulness,
            self.correctness,
            self.instruction_following,
            self.honesty,
            self.language_match,
        ]
        low, high = min(aspects), max(aspects)
        tolerance = self.rules.aspect_tolerance
        if self.score < low - tolerance or self.score > high + tolerance:
            raise ValueError(
                f"the overall score {self.score} contradicts the aspect scores "
                f"({low}-{high}, tolerance {tolerance:g})"
            )
        return self


class PairVerdict(_Checked):
    """The pairwise reply: a rationale and both answers' scores, 1-100."""

    rationale: str = Field(json_schema_extra={"maxLength": 400})
    score_1: Hundred
    score_2: Hundred


class TenVerdict(_Checked):
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
        "judge", cfg, messages, output, max_tokens=320, cache=cache_use(marker)
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
