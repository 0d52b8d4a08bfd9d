"""StubLLM: a scripted stand-in for the LLM client's ``structured`` call, for judge tests.

Without a script it judges by markers: every candidate text carries "[quality: N]", and the
stub reads the markers from the rendered user message in the order the answers are shown.
A rubric verdict gives every aspect and the overall score N; a two-answer verdict gives
``score_1 = N1 + bias`` and ``score_2 = N2`` (clamped to the verdict's range), so a positive
``bias`` makes it a position-biased judge that favours whichever answer is shown first.

A user message containing "[malformed]" makes it raise StructuredOutputError as the real client
does after its attempts: the call carries ``invalid_replies=3`` and the attempts' usage.

Scripted steps (``script``), taken one per call before falling back to markers: a dict of
verdict fields (validated against the asked output type), a ready verdict, an exception to
raise, or a function ``(messages, output) -> verdict`` (see ``by_order``). The judge asks a
pair's two orders concurrently, so a step meant for one order should be a ``by_order`` one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, cast

from pydantic import BaseModel

from services.judge.panel import Judge
from services.judge.verdicts import PairVerdict, RubricVerdict, TenVerdict
from taxoforge.llm import LLMClient, StructuredOutputError
from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "ASKED_USAGE",
    "FAILED_USAGE",
    "MALFORMED",
    "StubLLM",
    "by_order",
    "judge_of",
    "malformed_error",
    "quality",
]

QUALITY = re.compile(r"\[quality: (\d+)\]")
MALFORMED = "[malformed]"
# What one successful call costs, and what three invalid attempts cost.
ASKED_USAGE = pb.Usage(prompt_tokens=100, completion_tokens=20, cost_usd=0.001, calls=1)
FAILED_USAGE = pb.Usage(prompt_tokens=300, completion_tokens=60, cost_usd=0.003, calls=3)

_TOP: dict[type[BaseModel], int] = {RubricVerdict: 10, TenVerdict: 10, PairVerdict: 100}

Step = dict[str, Any] | BaseModel | Exception | Callable[[list[dict[str, str]], type], BaseModel]


def quality(n: int, text: str = "An answer") -> str:
    """A candidate text the marker-reading stub scores ``n``."""
    return f"{text} [quality: {n}]"


def by_order(
    a: pb.Response, b: pb.Response, a_first: tuple[int, int], b_first: tuple[int, int]
) -> Step:
    """A scripted two-answer reply that depends on which of ``a`` and ``b`` is shown first
    (the judge asks both orders concurrently, so call order is not relied on). Each tuple is
    (a's score, b's score) for that order."""

    def reply(messages: list[dict[str, str]], output: type[BaseModel]) -> BaseModel:
        user = messages[-1]["content"]
        if user.index(a.text) < user.index(b.text):
            first, second = a_first
        else:
            second, first = b_first
        return output.model_validate({"rationale": "by order", "score_1": first, "score_2": second})

    return reply


def judge_of(llm: StubLLM) -> Judge:
    """A real Judge whose model calls go to the stub."""
    return Judge(cast(LLMClient, llm))


def malformed_error(role: str = "judge", output: str = "RubricVerdict") -> StructuredOutputError:
    """What the real client raises when no reply validated after three attempts."""
    call = pb.LLMCall(role=role, model="judge-model", invalid_replies=3)
    call.usage.CopyFrom(FAILED_USAGE)
    return StructuredOutputError(
        f"{role} reply did not match {output} after 3 attempts: score: Input should be <= 10",
        call,
    )


class StubLLM:
    """Scripted or marker-reading verdicts; records every call it receives."""

    def __init__(self, script: Iterable[Step] = (), *, bias: int = 0) -> None:
        self.script: list[Step] = list(script)
        self.bias = bias
        self.messages: list[list[dict[str, str]]] = []  # every messages list, in call order
        self.outputs: list[type] = []
        self.kwargs: list[dict[str, Any]] = []

    @property
    def calls(self) -> int:
        return len(self.messages)

    def users(self, output: type | None = None) -> list[str]:
        """The user messages received (only those asking for ``output``, if given)."""
        return [
            m[-1]["content"]
            for m, o in zip(self.messages, self.outputs, strict=True)
            if output is None or o is output
        ]

    async def structured(
        self,
        role: str,
        cfg: pb.ModelConfig,
        messages: list[dict[str, str]],
        output: type[BaseModel],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        cache: bool = True,
    ) -> tuple[BaseModel, pb.LLMCall]:
        self.messages.append(messages)
        self.outputs.append(output)
        self.kwargs.append(
            {"temperature": temperature, "max_tokens": max_tokens, "seed": seed, "cache": cache}
        )
        user = messages[-1]["content"]
        if MALFORMED in user:
            raise malformed_error(role, output.__name__)
        verdict = self._next(messages, output) if self.script else self._by_markers(user, output)
        call = pb.LLMCall(role=role, model=cfg.model)
        call.usage.CopyFrom(ASKED_USAGE)
        return verdict, call

    def _next(self, messages: list[dict[str, str]], output: type[BaseModel]) -> BaseModel:
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        if isinstance(step, BaseModel):
            return step
        if isinstance(step, dict):
            return output.model_validate({"rationale": "scripted", **step})
        return step(messages, output)

    def _by_markers(self, user: str, output: type[BaseModel]) -> BaseModel:
        marks = [int(n) for n in QUALITY.findall(user)]
        top = _TOP[output]
        if output is RubricVerdict:
            (n,) = marks
            return RubricVerdict(
                rationale=f"quality {n}",
                helpfulness=n,
                correctness=n,
                instruction_following=n,
                honesty=n,
                language_match=n,
                score=n,
            )
        first, second = marks
        return output.model_validate(
            {
                "rationale": f"shown first {first}, second {second}",
                "score_1": max(1, min(top, first + self.bias)),
                "score_2": max(1, min(top, second)),
            }
        )
