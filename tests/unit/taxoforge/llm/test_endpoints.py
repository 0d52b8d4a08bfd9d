"""The operator's model registry: the models file, keys, defaults and what a tenant sees."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from taxoforge.llm.endpoints import (
    LOCAL_EMBEDDER,
    ModelChoiceError,
    ModelRegistry,
    ModelsFileError,
)
from taxoforge.settings import LLMSettings

OPERATOR_KEY = "sk-operator-0123456789abcdef"


def _registry(tmp_path: Path, spec: dict[str, Any], **settings: Any) -> ModelRegistry:
    path = tmp_path / "models.yaml"
    path.write_text(json.dumps(spec))
    return ModelRegistry.from_settings(LLMSettings(models_file=str(path), **settings))


def test_without_a_file_there_is_the_default_and_the_local_embedder() -> None:
    settings = LLMSettings(
        model="openai/m", api_base="http://llm:8000/v1", api_key=SecretStr(OPERATOR_KEY)
    )
    models = ModelRegistry.from_settings(settings)

    assert models.names() == ["default", LOCAL_EMBEDDER]
    default = models.get("default", "judge")
    assert (default.model, default.api_base, default.key()) == (
        "openai/m",
        "http://llm:8000/v1",
        OPERATOR_KEY,
    )
    assert models.default_for("generator") == "default"
    assert models.default_for("embedder") == LOCAL_EMBEDDER
    assert OPERATOR_KEY not in repr(default)


def test_a_models_file_declares_endpoints_keys_prices_and_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_KEY_FOR_TEST", "sk-from-env-0123456789")
    keyfile = tmp_path / "vllm.key"
    keyfile.write_text("file-key-0123456789\n")
    models = _registry(
        tmp_path,
        {
            "models": {
                "mini": {
                    "model": "openai/gpt-4o-mini",
                    "api_key_env": "OPENAI_KEY_FOR_TEST",
                    "input_cost_per_million": 0.15,
                    "output_cost_per_million": 0.6,
                },
                "qwen": {
                    "model": "openai/qwen",
                    "api_base": "http://vllm:8000/v1",
                    "api_key_file": str(keyfile),
                    "max_concurrency": 7,
                    "response_format": "json_object",
                    "roles": ["generator", "responder"],
                },
                "emb": {"model": "openai/text-embedding-3-small", "roles": ["embedder"]},
            },
            "defaults": {"judge": "mini", "embedder": "emb"},
        },
        max_concurrency=3,
    )

    mini, qwen = models.get("mini"), models.get("qwen")
    assert mini.key() == "sk-from-env-0123456789" and mini.api_base == ""
    assert mini.cost(1_000_000, 1_000_000) == pytest.approx(0.75)
    assert mini.max_concurrency == 3  # the settings' default
    assert qwen.key() == "file-key-0123456789"
    assert (qwen.max_concurrency, qwen.response_format) == (7, "json_object")
    assert models.get("default").cost(10, 10) is None  # no prices: litellm's map decides
    assert models.default_for("judge") == "mini"
    assert models.default_for("embedder") == "emb"
    assert models.default_for("generator") == "default"
    assert models.names("judge") == ["default", "mini"]
    assert models.names("embedder") == ["emb", LOCAL_EMBEDDER]


def test_the_gateway_reads_no_key(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(json.dumps({"models": {"m": {"model": "x/y", "api_key_env": "NOT_SET_X"}}}))
    settings = LLMSettings(models_file=str(path), api_key=SecretStr(OPERATOR_KEY))

    models = ModelRegistry.from_settings(settings, with_keys=False)

    assert models.get("m").key() is None
    assert models.get("default").key() is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"models": {"m": {"model": "x", "api_key_env": "TF_TEST_UNSET"}}}, "TF_TEST_UNSET"),
        ({"models": {"m": {"model": "x", "api_key_file": "/nonexistent/k"}}}, "api_key_file"),
        ({"models": {"m": {"model": "x", "api_key": "sk-inline"}}}, "api_key"),
        ({"models": {"m": {"model": "x", "api_base": "file:///etc"}}}, "api_base"),
        ({"models": {"m": {"model": "x", "roles": ["oracle"]}}}, "roles"),
        ({"models": {"bad name!": {"model": "x"}}}, "model name"),
        ({"models": {LOCAL_EMBEDDER: {"model": "x"}}}, "model name"),
        ({"models": {"m": {"model": "x"}}, "defaults": {"judge": "nope"}}, "defaults.judge"),
        (
            {"models": {"e": {"model": "x", "roles": ["embedder"]}}, "defaults": {"judge": "e"}},
            "defaults.judge",
        ),
        ({"modles": {}}, "modles"),
    ],
)
def test_a_bad_models_file_stops_the_start_with_the_reason(
    tmp_path: Path, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(ModelsFileError, match=message):
        _registry(tmp_path, spec)


def test_a_missing_models_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ModelsFileError, match="cannot read"):
        ModelRegistry.from_settings(LLMSettings(models_file=str(tmp_path / "none.yaml")))


def test_an_unknown_name_or_role_is_refused_listing_the_choices(tmp_path: Path) -> None:
    models = _registry(tmp_path, {"models": {"emb": {"model": "openai/e", "roles": ["embedder"]}}})

    with pytest.raises(ModelChoiceError, match=r"use one of: default$") as err:
        models.get("http://127.0.0.1:9999/v1", "generator", "models.generator.model")
    assert err.value.field == "models.generator.model"
    with pytest.raises(ModelChoiceError, match="not for the judge role; use one of: default"):
        models.get("emb", "judge")
    with pytest.raises(ModelChoiceError, match=f"use one of: emb, {LOCAL_EMBEDDER}"):
        models.get("default", "embedder")


def test_what_a_tenant_sees_has_no_address_and_no_key(tmp_path: Path) -> None:
    settings = LLMSettings(api_base="http://10.0.0.5:8000/v1", api_key=SecretStr(OPERATOR_KEY))
    models = ModelRegistry.from_settings(settings)

    public = json.dumps(models.public())

    assert "10.0.0.5" not in public and OPERATOR_KEY not in public
    assert [m["name"] for m in models.public()] == ["default", LOCAL_EMBEDDER]
    assert models.public()[0]["default_for"] == [
        "generator",
        "responder",
        "judge",
        "tagger",
        "expander",
    ]


def test_the_fingerprint_follows_what_names_stand_for_not_keys() -> None:
    base = ModelRegistry.from_settings(LLMSettings(model="openai/a", api_key=SecretStr("k1")))
    rekeyed = ModelRegistry.from_settings(LLMSettings(model="openai/a", api_key=SecretStr("k2")))
    moved = ModelRegistry.from_settings(LLMSettings(model="openai/a", api_base="http://x/v1"))

    assert base.fingerprint() == rekeyed.fingerprint()
    assert base.fingerprint() != moved.fingerprint()
