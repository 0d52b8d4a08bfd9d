"""StubLLM: a scripted stand-in for the LLM client, and the seeds and recipes the generator
tests write from."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel

from services.generator.instructions import RubricItem, Rubrics
from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "EN",
    "FR",
    "PAIRS",
    "REFUSAL",
    "RUBRICS",
    "Reply",
    "StubLLM",
    "make_recipe",
    "make_seed",
    "models_of",
    "stamp_of",
    "usage_is",
]


def models_of(*responder_models: str) -> pb.RoleModels:
    return pb.RoleModels(
        generator=pb.ModelConfig(model="gen"),
        responders=[pb.ModelConfig(model=m) for m in responder_models],
        target=pb.ModelConfig(model="tgt"),
    )


# ---- The stub model ----


@dataclass
class Reply:
    """One scripted completion."""

    text: str
    finish_reason: str = "stop"


class StubLLM:
    """A scripted model: ``complete`` and ``structured`` replies in order, every call recorded.

    Each call costs 10 prompt tokens, 5 completion tokens and $0.25.
    """

    def __init__(
        self,
        replies: Iterable[str | Reply] = (),
        structured: Iterable[BaseModel | Exception] = (),
    ) -> None:
        self.replies = [r if isinstance(r, Reply) else Reply(r) for r in replies]
        self.structured_replies = list(structured)
        self.calls: list[dict[str, Any]] = []

    @staticmethod
    def _call(role: str, cfg: pb.ModelConfig, finish_reason: str = "stop") -> pb.LLMCall:
        usage = pb.Usage(prompt_tokens=10, completion_tokens=5, cost_usd=0.25, calls=1)
        return pb.LLMCall(role=role, model=cfg.model, finish_reason=finish_reason, usage=usage)

    async def complete(
        self,
        role: str,
        cfg: pb.ModelConfig,
        messages: list[dict[str, str]],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        json_schema: dict[str, Any] | None = None,
        schema_name: str = "output",
        cache: bool = True,
    ) -> tuple[str, pb.LLMCall]:
        self.calls.append(
            {
                "kind": "complete",
                "role": role,
                "model": cfg.model,
                "messages": messages,
                "seed": seed,
                "cache": cache,
            }
        )
        assert self.replies, "StubLLM: no scripted reply left"
        reply = self.replies.pop(0)
        return reply.text, self._call(role, cfg, reply.finish_reason)

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
        self.calls.append(
            {
                "kind": "structured",
                "role": role,
                "model": cfg.model,
                "messages": messages,
                "output": output,
                "seed": seed,
                "cache": cache,
            }
        )
        assert self.structured_replies, "StubLLM: no scripted structured reply left"
        reply = self.structured_replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        assert isinstance(reply, output)
        return reply, self._call(role, cfg)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["kind"] == kind]

    @staticmethod
    def text_of(call: dict[str, Any]) -> str:
        return "\n".join(m["content"] for m in call["messages"])


# ---- Fixtures ----

EN = [
    "Explain why objects of different masses fall at the same rate in a vacuum.",
    "Describe how friction changes the motion of a sled sliding down a snowy hill.",
    "Compare kinetic and potential energy for a pendulum swinging back and forth.",
    "Explain how a lever lets a person lift a heavy rock with a small force.",
    "Describe what happens to the momentum of two carts after they collide.",
]
FR = [
    "Expliquez pourquoi des objets de masses différentes tombent à la même vitesse dans le vide.",
    "Décrivez comment le frottement modifie le mouvement d'une luge qui glisse sur la neige.",
    "Comparez l'énergie cinétique et l'énergie potentielle d'un pendule qui oscille.",
]
REFUSAL = "I'm sorry, but I can't help with writing that question."

RUBRICS = Rubrics(
    rubrics=[
        RubricItem(rubric="asks for a structured comparison", action="add a comparison table"),
        RubricItem(rubric="names concrete constraints", action="add a word limit"),
        RubricItem(rubric="needs several steps", action="require a step-by-step derivation"),
        RubricItem(rubric="targets an audience", action="say who the answer is for"),
    ]
)
PAIRS = {(r.rubric, r.action) for r in RUBRICS.rubrics}


def make_seed(strategy: str = "tap", language: str = "en", **fields: Any) -> pb.Seed:
    defaults: dict[str, Any] = {
        "job_id": "job",
        "item_id": "i0000003",
        "index": 3,
        "node_id": "physics",
        "node_title": "Physics",
        "node_path": "Natural Sciences > Physics",
        "node_description": "Forces and motion.",
        "language": language,
        "strategy": strategy,
        "syllabus": [
            pb.Session(title="Newton's laws", key_concepts=["inertia", "force", "mass"]),
            pb.Session(title="Energy", key_concepts=["work", "kinetic energy"]),
        ],
        "node_attributes": {"skills": pb.AttributeValue(items=["physics", "algebra"])},
        "task_title": "Worked problem",
    }
    defaults.update(fields)
    return pb.Seed(**defaults)


def make_recipe(**fields: Any) -> pb.Recipe:
    fields.setdefault("seed", 42)
    return pb.Recipe(models=models_of("r0", "r1"), **fields)


def usage_is(usage: pb.Usage, calls: int) -> None:
    assert usage.calls == calls
    assert usage.prompt_tokens == 10 * calls
    assert usage.completion_tokens == 5 * calls
    assert usage.cost_usd == pytest.approx(0.25 * calls)


def stamp_of(call: pb.LLMCall) -> str:
    return f"{call.template}@{call.template_version}"
