"""Request bodies of the taxonomy routes: edits, reviews, expansions, inductions."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.schemas import ModelSpec, embedder_config, model_config, refuse_operator_fields
from taxoforge.llm.endpoints import ModelRegistry
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import taxonomy_pb2 as tpb

__all__ = ["EditSpec", "ExpandSpec", "InduceSpec", "ReviewSpec", "node_from_dict"]

_STRICT = ConfigDict(extra="forbid")
_ID = r"^[a-z0-9][a-z0-9-]{0,62}$"


class NodeSpec(BaseModel):
    """A node to add (with its children, if any)."""

    model_config = _STRICT

    id: str = Field(pattern=_ID)
    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    kind: str = ""
    weight: float = Field(default=1.0, gt=0)
    attributes: dict[str, str | list[str]] = Field(default_factory=dict)
    children: list[NodeSpec] = Field(default_factory=list)


def node_from_dict(spec: NodeSpec) -> pb.TaxonomyNode:
    """The protobuf node of a NodeSpec."""
    node = pb.TaxonomyNode(
        id=spec.id,
        title=spec.title,
        description=spec.description,
        kind=spec.kind,
        weight=spec.weight,
    )
    for name, value in spec.attributes.items():
        if isinstance(value, str):
            node.attributes[name].text = value
        else:
            node.attributes[name].items.extend(value)
    node.children.extend(node_from_dict(child) for child in spec.children)
    return node


class OperationSpec(BaseModel):
    """One change: add (under ``node``), rename, describe, reweight, set_attribute, prune."""

    model_config = _STRICT

    op: Literal["add", "rename", "describe", "reweight", "set_attribute", "prune"]
    node: str = Field(pattern=_ID, description="The node changed (for add: the parent).")
    new: NodeSpec | None = Field(default=None, description="For add: the node to add.")
    title: str | None = None
    description: str | None = None
    weight: float | None = Field(default=None, gt=0)
    attribute: str | None = None
    value: str | list[str] | None = None

    def to_proto(self) -> tpb.EditOperation:
        op = tpb.EditOperation(
            op=self.op,
            node_id=self.node,
            title=self.title or "",
            description=self.description or "",
            weight=self.weight or 0.0,
            attribute=self.attribute or "",
        )
        if self.new is not None:
            op.node.CopyFrom(node_from_dict(self.new))
        if isinstance(self.value, str):
            op.value.text = self.value
        elif self.value is not None:
            op.value.items.extend(self.value)
        return op


class EditSpec(BaseModel):
    """Changes made together, as one new version."""

    model_config = _STRICT

    base_version: str = Field(
        default="", description="The version you edited; refused (409) if it is not the latest."
    )
    message: str = Field(default="", max_length=300)
    operations: list[OperationSpec] = Field(min_length=1, max_length=1000)


class ReviewSpec(BaseModel):
    """Accept or reject proposed nodes, as one new version."""

    model_config = _STRICT

    base_version: str = ""
    accept: list[str] = Field(default_factory=list)
    reject: list[str] = Field(default_factory=list)
    accept_rest: bool = Field(default=False, description="Accept every proposal not rejected.")


class ExpandSpec(BaseModel):
    """GLAN expansion of nodes: subjects for disciplines, syllabi for subjects."""

    model_config = _STRICT

    nodes: list[str] = Field(min_length=1, max_length=10_000)
    levels: int = Field(default=1, ge=1, le=2, description="2: subjects, then their syllabi.")
    samples: int = Field(default=3, ge=1, le=20, description="Subject lists asked per node.")
    max_children: int = Field(default=12, ge=1, le=50)
    min_sessions: int = Field(default=10, ge=1, le=40)
    max_sessions: int = Field(default=20, ge=1, le=40)
    base_version: str = ""
    name: str = "expansion"
    model: ModelSpec | None = None

    def to_proto(self, taxonomy_id: str, models: ModelRegistry) -> pb.ExpandRequest:
        return pb.ExpandRequest(
            taxonomy_id=taxonomy_id,
            base_version=self.base_version,
            node_ids=self.nodes,
            levels=self.levels,
            samples=self.samples,
            max_children=self.max_children,
            min_sessions=self.min_sessions,
            max_sessions=max(self.max_sessions, self.min_sessions),
            model=model_config(self.model, "expander", models, "model"),
            name=self.name,
        )


class InduceSpec(BaseModel):
    """A new taxonomy from your own instructions."""

    model_config = _STRICT

    taxonomy_id: str = Field(pattern=_ID)
    title: str = ""
    instructions: list[str] = Field(min_length=1, max_length=200_000)
    min_frequency: int = Field(default=2, ge=1, le=200_000)
    merge_threshold: float = Field(default=0.85, gt=0, le=1)
    name: str = "induction"
    model: ModelSpec | None = Field(default=None, description="The tagger role's model.")
    embedder: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="local/all-minilm-l6-v2 (offline, the default) or an embedding model from "
        "GET /v1/models.",
    )

    _no_endpoint = model_validator(mode="before")(refuse_operator_fields)

    def to_proto(self, models: ModelRegistry) -> tpb.InduceTaxonomyRequest:
        spec = pb.InduceRequest(
            taxonomy_id=self.taxonomy_id,
            title=self.title or self.taxonomy_id,
            min_frequency=self.min_frequency,
            merge_threshold=self.merge_threshold,
            model=model_config(self.model, "tagger", models, "model"),
            embedder=embedder_config(self.embedder, models, "embedder"),
            name=self.name,
        )
        return tpb.InduceTaxonomyRequest(spec=spec, instructions=self.instructions)
