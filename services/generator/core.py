"""Writing instructions and candidate responses: prompts in, cleaned records out."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from taxoforge.errors import PermanentError
from taxoforge.languages import language_name
from taxoforge.llm import LLMClient
from taxoforge.prompts import load_template
from taxoforge.usage import add_usage
from taxoforge.v1 import common_pb2 as pb

__all__ = ["Generator", "clean_instruction", "responder_for", "sampling_seed"]

_PROMPTS = Path(__file__).parent / "prompts"
_LABEL = re.compile(
    r"^\s*(?:\*\*)?(?:question|q|teacher|instruction|prompt|homework|exercise)\s*\d*\s*[:.\-)]\s*(?:\*\*)?\s*",
    re.IGNORECASE,
)
# An answer the model appended: "Answer:", "Solution -", "A:" (but not a choice such as "A. Mars").
_TAIL = re.compile(r"\n\s*(?:\*\*)?(?:(?:answer|student|solution)\s*[:.\-]|a\s*:)", re.IGNORECASE)


def sampling_seed(*parts: str) -> int:
    """A deterministic per-call seed, so reruns sample the same and candidates differ."""
    return int.from_bytes(hashlib.sha256("/".join(parts).encode()).digest()[:4], "big")


def clean_instruction(text: str) -> str:
    """The question alone: labels, quotes and any answer the model added are removed."""
    text = text.strip()
    text = _TAIL.split(text, maxsplit=1)[0]
    text = _LABEL.sub("", text, count=1).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'“”":
        text = text[1:-1].strip()
    return text


def responder_for(models: pb.RoleModels, candidate: int) -> tuple[int, pb.ModelConfig]:
    """Which responder writes candidate ``candidate``: responders in turn, else the generator."""
    if models.responders:
        index = candidate % len(models.responders)
        return index, models.responders[index]
    return 0, models.generator


class Generator:
    """Instruction and response writing for one process's LLM client."""

    def __init__(self, llm: LLMClient, instruction_attempts: int = 3) -> None:
        self._llm = llm
        self._attempts = instruction_attempts
        self._instruction = load_template(_PROMPTS / "instruction.yaml")
        self._response = load_template(_PROMPTS / "response.yaml")

    async def instruction(self, seed: pb.Seed, cfg: pb.ModelConfig) -> pb.Instruction:
        """Write the seed's instruction; empty replies are asked again, then the item fails."""
        messages = self._instruction.render(
            subject=seed.node_title,
            path=seed.node_path,
            description=seed.node_description or seed.node_title,
            language=language_name(seed.language),
        )
        usage = pb.Usage()
        for attempt in range(self._attempts):
            raw, call = await self._llm.complete(
                "generator",
                cfg,
                messages,
                seed=sampling_seed(seed.job_id, seed.item_id, "instruction", str(attempt)),
            )
            add_usage(usage, call.usage)
            text = clean_instruction(raw)
            if text:
                call.usage.CopyFrom(usage)
                return pb.Instruction(
                    job_id=seed.job_id,
                    item_id=seed.item_id,
                    seed=seed,
                    text=text,
                    call=self._instruction.stamp(call),
                )
        raise PermanentError(f"the generator gave no usable instruction in {self._attempts} tries")

    async def response(
        self, instruction: pb.Instruction, models: pb.RoleModels, candidate: int
    ) -> pb.Response:
        """Write candidate number ``candidate`` for an instruction."""
        responder, cfg = responder_for(models, candidate)
        messages = self._response.render(
            instruction=instruction.text, language=language_name(instruction.seed.language)
        )
        text, call = await self._llm.complete(
            "responders",
            cfg,
            messages,
            seed=sampling_seed(instruction.job_id, instruction.item_id, "response", str(candidate)),
        )
        return pb.Response(
            id=f"{instruction.item_id}.r{candidate}",
            text=text.strip(),
            call=self._response.stamp(call),
            responder=responder,
        )
