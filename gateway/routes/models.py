"""The models a caller may name: the operator's, by name, with no address and no key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from gateway.deps import authenticated
from gateway.views import ERROR_RESPONSES
from taxoforge.llm.endpoints import ModelRegistry

router = APIRouter(
    prefix="/v1", tags=["models"], dependencies=authenticated, responses=ERROR_RESPONSES
)


class ModelView(BaseModel):
    """A model a request may name in ``models.<role>.model`` (or ``embedder``)."""

    name: str
    model: str
    roles: list[str]
    default_for: list[str]
    description: str


class ModelsView(BaseModel):
    models: list[ModelView]


@router.get("/models", response_model=ModelsView, summary="The models a recipe may name")
async def list_models(request: Request) -> dict[str, Any]:
    """Each model the operator declared: its name (what a recipe says), the litellm model it
    is, the roles it is for and those it is the default of. Endpoints, keys, prices and limits
    are the operator's and not shown; a request sets only temperature, max_tokens and top_p."""
    models: ModelRegistry = request.app.state.models
    return {"models": models.public()}
