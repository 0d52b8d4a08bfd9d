"""Bodies of selection: how a job's datasets are chosen, and selection jobs over imports."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.schemas import ModelSpec, embedder_config, model_config, refuse_operator_fields
from gateway.selection_spec import SelectionSpecModel
from taxoforge.llm.endpoints import ModelRegistry
from taxoforge.selection import ImportShape
from taxoforge.v1 import common_pb2 as pb

__all__ = ["SelectJobSpec", "SourceSpec"]

_STRICT = ConfigDict(extra="forbid")


class SourceSpec(BaseModel):
    """Where the records are: an upload (POST /v1/uploads), a path the selector may read
    (under TAXOFORGE_IMPORT_ROOTS), or an http(s) URL. Exactly one."""

    model_config = _STRICT

    upload: str | None = Field(default=None, pattern=r"^uploads/[0-9a-f]{8,40}/[^/]{1,200}$")
    path: str | None = Field(default=None, min_length=1, max_length=4096)
    url: str | None = Field(default=None, pattern=r"^https?://", max_length=4096)
    format: Literal["auto", "jsonl", "parquet"] = "auto"
    shape: Literal["auto"] | ImportShape = Field(
        default="auto", description="auto: each row by its keys."
    )

    @model_validator(mode="after")
    def _one(self) -> SourceSpec:
        given = [x for x in (self.upload, self.path, self.url) if x]
        if len(given) != 1:
            raise ValueError("give exactly one of upload, path or url")
        return self

    def to_proto(self) -> pb.ImportSource:
        where = self.upload or self.path or self.url or ""
        return pb.ImportSource(
            object=self.upload or "",
            path=self.path or "",
            url=self.url or "",
            format=self.format,
            shape=self.shape,
            name=where.rsplit("/", 1)[-1].split("?", 1)[0],
        )


class SelectModelsSpec(BaseModel):
    """Models of a selection job: the tagger (open tags), the judge (comparative scoring) and
    the embedder (tag merging, DEITA; local/all-minilm-l6-v2, the default, runs offline).
    Names from GET /v1/models."""

    model_config = _STRICT

    tagger: ModelSpec | None = None
    judge: ModelSpec | None = None
    embedder: str | None = Field(default=None, min_length=1, max_length=128)

    _no_endpoint = model_validator(mode="before")(refuse_operator_fields)


class SelectJobSpec(BaseModel):
    """Select from a dataset you already have: import, dedup, decontaminate, TACOS, export."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "my-data",
                    "source": {"upload": "uploads/0a1b2c3d4e5f/train.jsonl"},
                    "selection": {"budget": 1000, "quota": "sqrt"},
                }
            ]
        },
    )

    name: str = Field(default="selection", min_length=1, max_length=120)
    source: SourceSpec
    selection: SelectionSpecModel = Field(default_factory=SelectionSpecModel)
    models: SelectModelsSpec = Field(default_factory=SelectModelsSpec)
    seed: int = Field(default=0, ge=0, lt=2**63)

    def to_proto(self, models: ModelRegistry) -> tuple[pb.Recipe, pb.ImportSource]:
        """The job's recipe (models and selection) and its source.

        Raises:
            ModelChoiceError: a model the operator did not declare for its role.
        """
        given = self.models
        recipe = pb.Recipe(name=self.name, seed=self.seed, selection=self.selection.to_proto())
        roles = recipe.models
        roles.tagger.CopyFrom(model_config(given.tagger, "tagger", models, "models.tagger"))
        roles.judge.CopyFrom(model_config(given.judge, "judge", models, "models.judge"))
        roles.embedder.CopyFrom(embedder_config(given.embedder, models, "models.embedder"))
        return recipe, self.source.to_proto()
