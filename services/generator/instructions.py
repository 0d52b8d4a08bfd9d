"""Writing instructions: a draft by the seed's strategy, through the quality gates and the
duplicate check, CodecLM's Self-Rubrics rounds, and the refinement contrastive filtering asks
for."""

from __future__ import annotations

import random
import re

from pydantic import BaseModel, Field

from services.generator.gates import (
    Written,
    check_draft,
    check_instruction,
    seed_labels,
    source_of,
)
from services.generator.strategies import FIELD_WORDING, Draft, Prompter, codeclm_metadata
from taxoforge.dedupe import DuplicateIndex
from taxoforge.degenerate import DEFAULT, Thresholds
from taxoforge.errors import PermanentError
from taxoforge.languages import language_name
from taxoforge.llm import LLMClient, StructuredOutputError
from taxoforge.llm.metering import add_usage
from taxoforge.markers import fence_for
from taxoforge.methods import MAX_SELF_RUBRICS_ROUNDS, sampling_seed
from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "MAX_ROUNDS",
    "GateFailure",
    "InstructionWriter",
    "RubricItem",
    "Rubrics",
    "clean_instruction",
]

_LABEL = re.compile(
    r"^\s*(?:\*\*)?(?:question|q|teacher|instruction|prompt|homework|exercise|request|"
    r"rewritten instruction)\s*\d*\s*[:.\-)]\s*(?:\*\*)?\s*",
    re.IGNORECASE,
)
# An answer the model appended: "Answer:", "Solution -", "A:" (but not a choice such as "A. Mars").
_TAIL = re.compile(r"\n\s*(?:\*\*)?(?:(?:answer|student|solution)\s*[:.\-]|a\s*:)", re.IGNORECASE)
# Self-Rubrics: CodecLM's limit of rounds.
MAX_ROUNDS = MAX_SELF_RUBRICS_ROUNDS
# How similar two instructions of a job may be when the recipe does not say.
_NEAR_DUPLICATE = 0.8


class GateFailure(PermanentError):
    """No draft passed the gates; ``instruction`` holds every rejected draft and why."""

    def __init__(self, instruction: pb.Instruction, attempts: int) -> None:
        reasons = ", ".join(sorted({r.reason for r in instruction.rejections}))
        super().__init__(f"no instruction passed the quality gates in {attempts} tries ({reasons})")
        self.instruction = instruction


class RubricItem(BaseModel):
    """One rubric and the action that meets it."""

    rubric: str = Field(json_schema_extra={"maxLength": 160})
    action: str = Field(json_schema_extra={"maxLength": 200})


class Rubrics(BaseModel):
    """Self-Rubrics: four rubrics with actions for one metadata."""

    rubrics: list[RubricItem] = Field(json_schema_extra={"minItems": 4, "maxItems": 4})


def clean_instruction(text: str) -> str:
    """The question alone: labels, quotes and any answer the model added are removed."""
    text = text.strip()
    text = _TAIL.split(text, maxsplit=1)[0]
    text = _LABEL.sub("", text, count=1).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'“”":
        text = text[1:-1].strip()
    return text


class InstructionWriter:
    """Instruction writing for one process's LLM client."""

    def __init__(
        self, llm: LLMClient, instruction_attempts: int = 4, thresholds: Thresholds = DEFAULT
    ) -> None:
        self._llm = llm
        self._attempts = instruction_attempts
        self._thresholds = thresholds
        self._prompts = Prompter()

    async def instruction(
        self,
        seed: pb.Seed,
        recipe: pb.Recipe,
        duplicates: DuplicateIndex | None = None,
    ) -> pb.Instruction:
        """Write the seed's instruction with its strategy; drafts the gates turn down are
        recorded and tried again. With ``duplicates``, a draft must also be new in its job
        (the recipe's ``near_duplicate`` says how similar is too similar).

        Raises:
            PermanentError: no draft passed in ``instruction_attempts`` tries (the reasons say
                why).
        """
        cfg = recipe.models.generator
        use_cache = not recipe.no_cache
        out = pb.Instruction(
            job_id=seed.job_id, item_id=seed.item_id, seed=seed, strategy=seed.strategy or "tap"
        )
        attempts = recipe.instruction_attempts or self._attempts
        threshold = recipe.near_duplicate if recipe.HasField("near_duplicate") else _NEAR_DUPLICATE
        for attempt in range(attempts):
            rng = random.Random(sampling_seed(recipe.seed, seed.index, "draft", attempt))
            draft = self._prompts.draft(seed, rng)
            raw, call = await self._llm.complete(
                "generator",
                cfg,
                draft.messages,
                seed=sampling_seed(recipe.seed, seed.index, "instruction", attempt),
                cache=use_cache,
            )
            add_usage(out.usage, call.usage)
            text = clean_instruction(raw)
            check_lang = not recipe.no_language_check
            rejection = check_draft(text, call.finish_reason, seed.language, check_lang)
            if rejection is None:
                labels = seed_labels(seed, draft.use_case, *draft.concepts, *draft.skills)
                labels += [s.title for s in draft.sessions]
                source = source_of(
                    draft.template, draft.messages, [seed.node_path], FIELD_WORDING, labels
                )
                written = Written(source, seed.language, check_lang, self._thresholds)
                rejection = check_instruction(text, written)
            if rejection is None and out.strategy == "codeclm":
                text, rejection = await self._self_rubrics(out, draft, text, recipe, attempt)
            if rejection is None and duplicates is not None:
                rejection = await duplicates.claim(seed.job_id, seed.item_id, text, threshold)
            if rejection is not None:
                out.rejections.append(rejection)
                continue
            out.text = text
            out.call.CopyFrom(draft.template.stamp(call))
            out.sessions.extend(draft.sessions)
            out.concepts.extend(draft.concepts)
            out.use_case = draft.use_case or out.use_case
            if draft.skills:
                del out.skills[:]
                out.skills.extend(draft.skills)
            return out
        raise GateFailure(out, attempts)

    async def _self_rubrics(
        self, out: pb.Instruction, draft: Draft, text: str, recipe: pb.Recipe, attempt: int
    ) -> tuple[str, pb.Rejection | None]:
        """CodecLM Self-Rubrics: 4 rubrics with actions for the metadata, then per round one
        action picked at random rewrites the instruction (at most 4 rounds, each recorded)."""
        rounds = min(recipe.rubric_rounds if recipe.HasField("rubric_rounds") else 1, MAX_ROUNDS)
        out.use_case = draft.use_case
        del out.skills[:]
        out.skills.extend(draft.skills)
        del out.rounds[:]
        if rounds <= 0:
            return text, None
        rejection = await self._ensure_rubrics(out, recipe)
        if rejection is not None:
            rejection.text = text
            return text, rejection
        rng = random.Random(sampling_seed(recipe.seed, out.seed.index, "rounds", attempt))
        for number in range(1, rounds + 1):
            text, rejection = await self._round(out, text, recipe, number, rng, attempt)
            if rejection is not None:
                return text, rejection
        return text, None

    async def _ensure_rubrics(self, out: pb.Instruction, recipe: pb.Recipe) -> pb.Rejection | None:
        """The instruction's 4 rubrics with actions, written once per item."""
        if out.rubrics:
            return None
        if not out.use_case:
            out.use_case, skills = codeclm_metadata(out.seed)
            out.skills.extend(skills)
        try:
            reply, call = await self._llm.structured(
                "generator",
                recipe.models.generator,
                self._prompts.rubrics.render(use_case=out.use_case, skills=", ".join(out.skills)),
                Rubrics,
                seed=sampling_seed(recipe.seed, out.seed.index, "rubrics"),
                cache=not recipe.no_cache,
            )
        except StructuredOutputError as exc:
            add_usage(out.usage, exc.call.usage)
            return pb.Rejection(reason="rubrics_failed", detail=str(exc)[:300])
        add_usage(out.usage, call.usage)
        out.rubrics.extend(pb.RubricItem(rubric=r.rubric, action=r.action) for r in reply.rubrics)
        return None

    async def _round(
        self,
        out: pb.Instruction,
        text: str,
        recipe: pb.Recipe,
        number: int,
        rng: random.Random,
        attempt: int,
    ) -> tuple[str, pb.Rejection | None]:
        """One Self-Rubrics round: a random rubric's action rewrites the instruction."""
        rubric = rng.choice(list(out.rubrics))
        improved, call = await self.improve(
            out.seed, text, rubric.action, recipe, number, attempt, version=out.version
        )
        add_usage(out.usage, call.usage)
        check_lang = not recipe.no_language_check
        rejection = check_draft(improved, call.finish_reason, out.seed.language, check_lang)
        if rejection is None:
            # The rewrite must not carry the improve prompt's delimiters or wording either.
            labels = seed_labels(out.seed, out.use_case, *out.skills, *out.concepts)
            source = source_of(self._prompts.improve, paths=[out.seed.node_path], labels=labels)
            written = Written(source, out.seed.language, check_lang, self._thresholds)
            rejection = check_instruction(improved, written)
        if rejection is not None:
            return text, rejection
        out.rounds.append(
            pb.RubricRound(
                round=number,
                rubric=rubric.rubric,
                action=rubric.action,
                instruction=improved,
                call=self._prompts.improve.stamp(call),
            )
        )
        return improved, None

    async def refine(self, instruction: pb.Instruction, recipe: pb.Recipe) -> pb.Instruction:
        """Another Self-Rubrics round for an instruction contrastive filtering sent back: the
        next version, harder and more specific, its round recorded.

        Raises:
            GateFailure: no rewritten draft passed the gates.
        """
        out = pb.Instruction()
        out.CopyFrom(instruction)
        out.version = instruction.version + 1
        rejection = await self._ensure_rubrics(out, recipe)
        if rejection is None:
            number = len(out.rounds) + 1
            attempts = recipe.instruction_attempts or self._attempts
            for attempt in range(attempts):
                rng = random.Random(
                    sampling_seed(recipe.seed, out.seed.index, "refine", out.version, attempt)
                )
                text, rejection = await self._round(out, out.text, recipe, number, rng, attempt)
                if rejection is None:
                    out.text = text
                    return out
                out.rejections.append(rejection)
        elif rejection is not None:
            out.rejections.append(rejection)
        raise GateFailure(out, recipe.instruction_attempts or self._attempts)

    async def improve(
        self,
        seed: pb.Seed,
        text: str,
        action: str,
        recipe: pb.Recipe,
        number: int,
        attempt: int = 0,
        *,
        version: int = 0,
    ) -> tuple[str, pb.LLMCall]:
        """One Self-Rubrics round: the instruction (``version`` of the item) rewritten to
        follow ``action``. The instruction is model output, so it is fenced like any untrusted
        text; the marker is the same on redelivery, so a repeat is answered from the cache."""
        marker = await fence_for("improve", seed.item_id, version, number, attempt)
        messages = self._prompts.improve.render(
            nonce=marker.marker,
            instruction=marker.clean(text),
            action=action,
            language=language_name(seed.language),
        )
        raw, call = await self._llm.complete(
            "generator",
            recipe.models.generator,
            messages,
            seed=sampling_seed(recipe.seed, seed.index, "round", number, attempt),
            cache=marker.stable and not recipe.no_cache,
        )
        return clean_instruction(raw), call
