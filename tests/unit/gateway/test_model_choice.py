"""A request names one of the operator's models and sets sampling; never an address, a key,
a price or a limit (issue 11)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from gateway.judge_schemas import JudgeRequestSpec
from gateway.schemas import OPERATOR_SETTING, RecipeSpec, recipe_to_proto
from gateway.selection_schemas import SelectJobSpec
from gateway.taxonomy_schemas import ExpandSpec, InduceSpec
from taxoforge.llm.endpoints import LOCAL_EMBEDDER, Endpoint, ModelChoiceError, ModelRegistry

MODELS = ModelRegistry(
    [
        Endpoint("default", "openai/m", "http://127.0.0.1:8081/v1"),
        Endpoint("big", "openai/big", "http://vllm:8000/v1", roles=("generator", "judge")),
        Endpoint(LOCAL_EMBEDDER, LOCAL_EMBEDDER, roles=("embedder",)),
    ]
)
_JUDGE = {"instruction": "Why?", "responses": [{"text": "a"}]}
_SOURCE = {"source": {"upload": "uploads/0a1b2c3d4e5f/x.jsonl"}}


def _operator_error(cls: type[BaseModel], body: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as err:
        cls.model_validate(body)
    [error] = err.value.errors()
    assert error["type"] == OPERATOR_SETTING
    return str(error["msg"])


def test_the_issues_request_is_refused() -> None:
    body = {"count": 1, "models": {"generator": {"api_base": "http://127.0.0.1:9999/v1"}}}

    message = _operator_error(RecipeSpec, body)

    assert message.startswith("api_base: model endpoints, keys, prices and limits are the operator")


@pytest.mark.parametrize(
    "setting",
    [
        {"api_base": "http://10.0.0.1/v1"},
        {"api_key": "sk-mine"},
        {"base_url": "http://x/v1"},
        {"max_concurrency": 4096},
        {"input_cost_per_million": 0.0},
        {"output_cost_per_million": 0.0},
        {"response_format": "none"},
    ],
)
@pytest.mark.parametrize("role", ["generator", "judge", "target", "tagger"])
def test_no_role_may_set_what_is_the_operators(setting: dict[str, Any], role: str) -> None:
    body = {"count": 1, "models": {role: {"model": "default", **setting}}}

    assert _operator_error(RecipeSpec, body).startswith(next(iter(setting)))


@pytest.mark.parametrize(
    ("cls", "body"),
    [
        (RecipeSpec, {"count": 1, "models": {"responders": [{}, {"api_base": "http://x"}]}}),
        (RecipeSpec, {"count": 1, "models": {"embedder_api_base": "http://x"}}),
        (SelectJobSpec, {**_SOURCE, "models": {"embedder_api_base": "http://127.0.0.1:1/v1"}}),
        (SelectJobSpec, {**_SOURCE, "models": {"judge": {"api_base": "http://x"}}}),
        (InduceSpec, {"taxonomy_id": "t", "instructions": ["a"], "embedder_api_base": "http://x"}),
        (InduceSpec, {"taxonomy_id": "t", "instructions": ["a"], "model": {"api_key": "k"}}),
        (ExpandSpec, {"nodes": ["n"], "model": {"api_base": "http://169.254.169.254/"}}),
        (JudgeRequestSpec, {**_JUDGE, "judge": {"api_base": "http://127.0.0.1:9999/v1"}}),
    ],
)
def test_every_request_that_names_models_refuses_endpoints(
    cls: type[BaseModel], body: dict[str, Any]
) -> None:
    _operator_error(cls, body)


def test_an_undeclared_name_is_refused_with_the_field_and_the_names_to_use() -> None:
    spec = RecipeSpec.model_validate({"count": 1, "models": {"judge": {"model": "openai/gpt-4o"}}})

    with pytest.raises(ModelChoiceError, match="use one of: big, default") as err:
        recipe_to_proto(spec, MODELS)

    assert err.value.field == "models.judge.model"


@pytest.mark.parametrize(
    ("models", "field"),
    [
        ({"tagger": {"model": "big"}}, "models.tagger.model"),  # declared, not for tagging
        ({"responders": [{}, {"model": "nope"}]}, "models.responders[1].model"),
        ({"embedder": "openai/text-embedding-3-small"}, "models.embedder"),
        ({"embedder": "default"}, "models.embedder"),  # a chat model is no embedder
    ],
)
def test_a_name_not_declared_for_the_role_is_refused(models: dict[str, Any], field: str) -> None:
    spec = RecipeSpec.model_validate({"count": 1, "models": models})

    with pytest.raises(ModelChoiceError) as err:
        recipe_to_proto(spec, MODELS)

    assert err.value.field == field


def test_selection_induction_expansion_and_judging_resolve_names_the_same_way() -> None:
    recipe, _ = SelectJobSpec.model_validate(
        {**_SOURCE, "models": {"judge": {"model": "big"}}}
    ).to_proto(MODELS)
    assert (recipe.models.judge.model, recipe.models.tagger.model) == ("big", "default")
    assert recipe.models.embedder.model == LOCAL_EMBEDDER

    induce = InduceSpec.model_validate({"taxonomy_id": "t", "instructions": ["a"]})
    assert induce.to_proto(MODELS).spec.embedder.model == LOCAL_EMBEDDER

    with pytest.raises(ModelChoiceError, match="not for the expander role"):
        ExpandSpec.model_validate({"nodes": ["n"], "model": {"model": "big"}}).to_proto("t", MODELS)

    with pytest.raises(ModelChoiceError) as err:
        JudgeRequestSpec.model_validate({**_JUDGE, "judge": {"model": "http://x"}}).to_proto(MODELS)
    assert err.value.field == "judge.model"
