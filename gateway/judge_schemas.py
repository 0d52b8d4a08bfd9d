"""Bodies of synchronous judging: POST /v1/judge."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.schemas import JudgingSpec, ModelSpec, model_config
from taxoforge.llm.endpoints import ModelRegistry
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import judge_pb2 as jpb

__all__ = ["JudgeRequestSpec"]

_STRICT = ConfigDict(extra="forbid")


class CandidateSpec(BaseModel):
    """One response to judge."""

    model_config = _STRICT

    id: str | None = Field(default=None, max_length=64)
    text: str


class ItemSpec(BaseModel):
    """An instruction and its candidate responses."""

    model_config = _STRICT

    instruction: str = Field(min_length=1)
    language: str = "en"
    responses: list[CandidateSpec] = Field(min_length=1, max_length=8)


class JudgeRequestSpec(BaseModel):
    """One item (``instruction`` + ``responses``) or a batch (``items``), judged now."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "instruction": "What causes the seasons on Earth?",
                    "responses": [
                        {"text": "The tilt of Earth's axis relative to its orbit."},
                        {"text": "The changing distance between Earth and the Sun."},
                    ],
                    "judging": {"mode": "pairwise"},
                }
            ]
        },
    )

    instruction: str | None = None
    language: str = "en"
    responses: list[CandidateSpec] | None = Field(default=None, min_length=1, max_length=8)
    items: list[ItemSpec] | None = Field(default=None, min_length=1, max_length=64)
    judging: JudgingSpec = Field(default_factory=JudgingSpec)
    min_margin: float | None = Field(default=None, ge=0, le=99)
    judge: ModelSpec | None = None

    @model_validator(mode="after")
    def _one_or_batch(self) -> JudgeRequestSpec:
        single = self.instruction is not None or self.responses is not None
        if single == (self.items is not None):
            raise ValueError("give instruction and responses, or items (a batch), not both")
        if single and (not self.instruction or not self.responses):
            raise ValueError("give both instruction and responses")
        batch = self.items or []
        pairwise = self.judging.mode == "pairwise"
        for n, item in enumerate(
            batch or [ItemSpec(instruction="x", responses=self.responses or [])]
        ):
            if pairwise and len(item.responses) < 2:
                raise ValueError(f"item {n}: pairwise judging needs at least two responses")
        return self

    def to_proto(self, models: ModelRegistry) -> jpb.JudgeBatchRequest:
        """One request per item; responses get ids r0, r1, ... unless given."""
        items = self.items or [
            ItemSpec(
                instruction=self.instruction or "",
                language=self.language,
                responses=self.responses or [],
            )
        ]
        judge = model_config(self.judge, "judge", models, "judge")
        config = self.judging.to_proto()
        margin = self.min_margin
        if margin is None:
            margin = 10.0 if self.judging.mode == "pairwise" else 1.0
        out = jpb.JudgeBatchRequest()
        for n, item in enumerate(items):
            instruction = pb.Instruction(text=item.instruction, item_id=f"item{n}")
            instruction.seed.language = item.language
            responses = [
                pb.Response(id=r.id or f"r{i}", text=r.text) for i, r in enumerate(item.responses)
            ]
            out.requests.add(
                candidates=pb.Candidates(instruction=instruction, responses=responses),
                judge=judge,
                config=config,
                min_margin=margin,
            )
        return out
