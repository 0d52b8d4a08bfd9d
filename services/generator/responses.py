"""Writing candidate responses: which responder writes each candidate, and the answers
tried again when empty or in another language."""

from __future__ import annotations

from services.generator.gates import check_draft
from services.generator.strategies import Prompter
from taxoforge.errors import PermanentError
from taxoforge.languages import language_name
from taxoforge.llm import LLMClient
from taxoforge.llm.metering import add_usage
from taxoforge.methods import sampling_seed
from taxoforge.v1 import common_pb2 as pb

__all__ = ["ResponseWriter", "responder_for"]


def responder_for(models: pb.RoleModels, candidate: int) -> tuple[int, pb.ModelConfig]:
    """Which responder writes candidate ``candidate``: responders in turn, else the generator."""
    if models.responders:
        index = candidate % len(models.responders)
        return index, models.responders[index]
    return 0, models.generator


class ResponseWriter:
    """Response writing for one process's LLM client."""

    def __init__(self, llm: LLMClient) -> None:
        self._llm = llm
        self._template = Prompter().response

    async def response(
        self,
        instruction: pb.Instruction,
        recipe: pb.Recipe,
        candidate: int,
        target: bool = False,
        attempts: int = 3,
    ) -> pb.Response:
        """Write candidate number ``candidate`` (or the target model's answer); empty or
        wrong-language answers are tried again, and kept flagged if none passes."""
        models = recipe.models
        if target:
            responder, cfg = -1, models.target
        else:
            responder, cfg = responder_for(models, candidate)
        language = instruction.seed.language
        messages = self._template.render(
            instruction=instruction.text, language=language_name(language)
        )
        out = pb.Response(
            id=f"{instruction.item_id}.{'t' if target else f'r{candidate}'}",
            responder=responder,
            language_ok=True,
        )
        answered: pb.Response | None = None
        for attempt in range(attempts):
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
                not recipe.no_language_check,
                refusals=False,  # declining can be the right answer (safety-sensitive tasks)
                truncation=False,  # a long answer cut at the limit is still an answer
            )
            if rejection is None:
                return out
            out.rejections.append(rejection)
            if rejection.reason != "empty":
                answered = pb.Response()
                answered.CopyFrom(out)
        if answered is None:
            raise PermanentError(f"the responder gave no answer in {attempts} tries")
        # Every answer was in another language: keep the last one, flagged for the judge.
        del answered.rejections[:]
        answered.rejections.extend(out.rejections)
        answered.usage.CopyFrom(out.usage)
        answered.language_ok = False
        return answered
