"""Writing candidate responses: which responder writes each candidate, the gates each answer
must pass before any judge sees it, and the candidates drawn again when they fail.

A candidate that is empty, in another language, an echo of its instruction, a leak of our
prompt, a loop, or near-identical to an earlier candidate is discarded and drawn again with a new
sampling seed; every discarded one is recorded on ``Candidates.rejected``. An instruction for
which some candidate cannot be had fails (``CandidateFailure``, a permanent error).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

from services.generator.gates import Written, check_draft, check_response, source_of
from services.generator.strategies import Prompter
from taxoforge.degenerate import DEFAULT, Thresholds, excerpt, near_identical
from taxoforge.errors import PermanentError
from taxoforge.languages import language_name
from taxoforge.llm import LLMClient
from taxoforge.llm.metering import add_usage
from taxoforge.methods import sampling_seed
from taxoforge.v1 import common_pb2 as pb

__all__ = ["DEFAULT_K", "CandidateFailure", "Once", "ResponseWriter", "responder_for"]

# Candidates per instruction when the recipe does not say.
DEFAULT_K = 2

# Stores what ``write`` makes under a key part ("r0", "r0-d1", "t") once, or returns what is
# stored there: the worker's exactly-once storage, so a redelivery redraws nothing.
Once = Callable[[str, Callable[[], Awaitable[pb.Response]]], Awaitable[pb.Response]]


async def _no_store(part: str, write: Callable[[], Awaitable[pb.Response]]) -> pb.Response:
    return await write()


class CandidateFailure(PermanentError):
    """A candidate slot never passed the gates; ``candidates.rejected`` holds every discarded
    draw and why."""

    def __init__(self, candidates: pb.Candidates, slot: str) -> None:
        reasons = Counter(r.reason for r in candidates.rejected if r.candidate == slot)
        listed = ", ".join(f"{reason} x{n}" for reason, n in sorted(reasons.items()))
        super().__init__(f"no response candidate {slot} passed the quality gates ({listed})")
        self.candidates = candidates


def responder_for(models: pb.RoleModels, candidate: int) -> tuple[int, pb.ModelConfig]:
    """Which responder writes candidate ``candidate``: responders in turn, else the generator."""
    if models.responders:
        index = candidate % len(models.responders)
        return index, models.responders[index]
    return 0, models.generator


def _failed(response: pb.Response) -> bool:
    return not response.text and bool(response.rejections)


class ResponseWriter:
    """Response writing for one process's LLM client."""

    def __init__(
        self,
        llm: LLMClient,
        attempts: int = 3,
        redraws: int = 2,
        thresholds: Thresholds = DEFAULT,
    ) -> None:
        self._llm = llm
        self._template = Prompter().response
        self._attempts = attempts
        self._redraws = redraws
        self._thresholds = thresholds

    async def candidates(
        self, instruction: pb.Instruction, recipe: pb.Recipe, once: Once = _no_store
    ) -> pb.Candidates:
        """The instruction's k candidates (and the target's answer, for contrastive filtering),
        each past the gates and no two near-identical; every discarded draw is in ``rejected``.

        Raises:
            CandidateFailure: a candidate could not be had in its attempts and redraws.
        """
        k = recipe.responses_per_instruction or DEFAULT_K
        slots = [(c, False) for c in range(k)]
        if recipe.contrastive and recipe.models.target.model:
            slots.append((k, True))
        # Each slot's first draw is stored on its own, so a retry redoes only the missing ones.
        first = await asyncio.gather(
            *(self._drawn(instruction, recipe, c, target, 0, once) for c, target in slots)
        )
        out = pb.Candidates(instruction=instruction)
        accepted: list[pb.Response] = []
        for (c, target), response in zip(slots, first, strict=True):
            for draw in range(self._redraws + 1):
                if draw:
                    response = await self._drawn(instruction, recipe, c, target, draw, once)
                out.rejected.extend(self._discarded(response))
                if _failed(response):
                    raise CandidateFailure(out, response.id)
                # The target's answer may match a candidate: contrastive filtering compares them.
                same = (
                    None
                    if target
                    else near_identical(
                        response.text, ((r.id, r.text) for r in accepted), self._thresholds
                    )
                )
                if same is None:
                    accepted.append(response)
                    break
                out.rejected.add(
                    reason=same.reason,
                    detail=same.detail,
                    candidate=response.id,
                    attempt=draw * self._attempts + len(response.rejections),
                    text=excerpt(response.text),
                )
            else:
                raise CandidateFailure(out, response.id)
        out.responses.extend(accepted)
        return out

    @staticmethod
    def _discarded(response: pb.Response) -> list[pb.Rejection]:
        return [
            pb.Rejection(
                reason=r.reason,
                detail=r.detail,
                candidate=response.id,
                attempt=r.attempt,
                text=excerpt(r.text),
            )
            for r in response.rejections
        ]

    async def _drawn(
        self,
        instruction: pb.Instruction,
        recipe: pb.Recipe,
        candidate: int,
        target: bool,
        draw: int,
        once: Once,
    ) -> pb.Response:
        slot = "t" if target else f"r{candidate}"
        part = slot if draw == 0 else f"{slot}-d{draw}"
        return await once(
            part,
            lambda: self._draw(instruction, recipe, candidate, target, draw * self._attempts),
        )

    async def response(
        self,
        instruction: pb.Instruction,
        recipe: pb.Recipe,
        candidate: int,
        target: bool = False,
        attempts: int | None = None,
    ) -> pb.Response:
        """Write candidate number ``candidate`` (or the target model's answer); answers the
        gates turn down are asked again (each recorded on ``rejections``).

        Raises:
            PermanentError: no answer passed the gates in ``attempts`` tries.
        """
        out = await self._draw(instruction, recipe, candidate, target, 0, attempts)
        if _failed(out):
            reasons = ", ".join(sorted({r.reason for r in out.rejections}))
            tries = len(out.rejections)
            raise PermanentError(
                f"the responder gave no usable answer in {tries} tries ({reasons})"
            )
        return out

    async def _draw(
        self,
        instruction: pb.Instruction,
        recipe: pb.Recipe,
        candidate: int,
        target: bool,
        first_attempt: int,
        attempts: int | None = None,
    ) -> pb.Response:
        """Sample until an answer passes the gates: the response, or one with no text and
        every rejected sample when none did."""
        models = recipe.models
        if target:
            responder, cfg = -1, models.target
        else:
            responder, cfg = responder_for(models, candidate)
        language = instruction.seed.language
        check_lang = not recipe.no_language_check
        messages = self._template.render(
            instruction=instruction.text, language=language_name(language)
        )
        source = source_of(self._template, messages, [instruction.seed.node_path])
        out = pb.Response(
            id=f"{instruction.item_id}.{'t' if target else f'r{candidate}'}",
            responder=responder,
            language_ok=True,
        )
        for attempt in range(first_attempt, first_attempt + (attempts or self._attempts)):
            text, call = await self._llm.complete(
                "target" if target else "responders",
                cfg,
                messages,
                seed=sampling_seed(
                    recipe.seed, instruction.seed.index, "response", candidate, attempt
                ),
                cache=not recipe.no_cache,
            )
            add_usage(out.usage, call.usage)
            out.text = text.strip()
            out.call.CopyFrom(self._template.stamp(call))
            rejection = check_draft(
                out.text,
                call.finish_reason,
                language,
                check_lang,
                refusals=False,  # declining can be the right answer (safety-sensitive tasks)
                truncation=False,  # a long answer cut at the limit is still an answer
            ) or check_response(
                instruction.text, out.text, Written(source, language, check_lang, self._thresholds)
            )
            if rejection is None:
                return out
            rejection.attempt = attempt
            out.rejections.append(rejection)
        out.text = ""
        out.ClearField("call")
        return out
