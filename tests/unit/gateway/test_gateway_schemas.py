"""REST bodies: recipe validation, resolution to the protobuf recipe, and the job view."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.schemas import LanguageSpec, RecipeSpec, recipe_to_proto
from gateway.views import JobView, job_view
from taxoforge.settings import LLMSettings
from taxoforge.v1 import common_pb2 as pb

DEFAULTS = LLMSettings(model="openai/default-model", api_base="http://llm:8000/v1")


def _shares(spec: RecipeSpec) -> dict[str, float]:
    return {lang.code: lang.share for lang in spec.languages if isinstance(lang, LanguageSpec)}


# ---- RecipeSpec ----


def test_only_count_is_required() -> None:
    spec = RecipeSpec(count=5)

    assert spec.count == 5
    assert spec.name == "job"
    assert spec.taxonomy == "starter"
    assert _shares(spec) == {"en": 1.0}
    assert spec.responses_per_instruction == 2
    assert spec.budget == 0
    assert spec.min_margin is None  # the judging mode decides: 1 (rubric) or 10 (pairwise)


def test_count_is_required() -> None:
    with pytest.raises(ValidationError, match=r"count\n  Field required"):
        RecipeSpec.model_validate({})


@pytest.mark.parametrize("count", [0, -1, 1_000_001])
def test_count_bounds(count: int) -> None:
    with pytest.raises(ValidationError, match="count"):
        RecipeSpec(count=count)


@pytest.mark.parametrize("count", [1, 1_000_000])
def test_count_bounds_are_inclusive(count: int) -> None:
    assert RecipeSpec(count=count).count == count


def test_language_codes_get_equal_shares() -> None:
    spec = RecipeSpec(count=5, languages=["en", "fr", "de", "es"])

    assert _shares(spec) == {"en": 0.25, "fr": 0.25, "de": 0.25, "es": 0.25}


def test_language_codes_are_normalised() -> None:
    spec = RecipeSpec(count=5, languages=[" FR ", {"code": "De"}])

    assert list(_shares(spec)) == ["fr", "de"]


def test_explicit_shares_are_kept() -> None:
    spec = RecipeSpec.model_validate(
        {"count": 5, "languages": [{"code": "en", "share": 0.7}, {"code": "fr", "share": 0.3}]}
    )

    assert _shares(spec) == {"en": 0.7, "fr": 0.3}


def test_shares_must_sum_to_one_and_the_error_says_the_sum() -> None:
    with pytest.raises(ValidationError, match=r"language shares sum to 0\.9; they must sum to 1"):
        RecipeSpec.model_validate(
            {"count": 5, "languages": [{"code": "en", "share": 0.5}, {"code": "fr", "share": 0.4}]}
        )


@pytest.mark.parametrize(
    "languages",
    [
        [{"code": "en", "share": 0.5}, {"code": "fr"}],
        [{"code": "en", "share": 0.5}, "fr"],
    ],
)
def test_mixing_given_and_omitted_shares_is_rejected(languages: list[Any]) -> None:
    with pytest.raises(ValidationError, match="give a share for every language value, or for none"):
        RecipeSpec.model_validate({"count": 5, "languages": languages})


def test_unknown_language_lists_the_known_codes() -> None:
    with pytest.raises(ValidationError, match=r"unknown language 'xx'.*one of: ar, bg, .*en, .*zh"):
        RecipeSpec(count=5, languages=["xx"])


def test_duplicate_codes_are_rejected() -> None:
    with pytest.raises(
        ValidationError, match=r"language lists a value twice: \['en', 'fr', 'en'\]"
    ):
        RecipeSpec(count=5, languages=["en", "fr", "EN"])


def test_empty_language_list_is_rejected() -> None:
    with pytest.raises(ValidationError, match="languages"):
        RecipeSpec(count=5, languages=[])


@pytest.mark.parametrize("share", [0, -0.5, 1.5])
def test_share_bounds(share: float) -> None:
    with pytest.raises(ValidationError, match="share"):
        RecipeSpec.model_validate({"count": 5, "languages": [{"code": "en", "share": share}]})


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match=r"colour\n  Extra inputs are not permitted"):
        RecipeSpec.model_validate({"count": 5, "colour": "red"})


def test_unknown_nested_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match=r"models\.judge\.temp\n  Extra inputs"):
        RecipeSpec.model_validate({"count": 5, "models": {"judge": {"temp": 0.1}}})


@pytest.mark.parametrize(
    "field",
    [
        {"responses_per_instruction": 1},
        {"responses_per_instruction": 17},
        {"budget": -1},
        {"min_margin": 100},
        {"seed": -1},
        {"models": {"responders": []}},
        {"models": {"generator": {"temperature": 2.5}}},
    ],
)
def test_other_bounds(field: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RecipeSpec.model_validate({"count": 5, **field})


# ---- recipe_to_proto ----


def test_defaults_fill_every_role() -> None:
    recipe = recipe_to_proto(RecipeSpec(count=5), DEFAULTS)

    roles = [recipe.models.generator, *recipe.models.responders, recipe.models.judge]
    for cfg in roles:
        assert cfg.model == "openai/default-model"
        assert cfg.api_base == "http://llm:8000/v1"
        assert cfg.response_format == "auto"
        assert cfg.HasField("temperature")
        assert cfg.HasField("max_tokens")


def test_recipe_fields_are_copied() -> None:
    spec = RecipeSpec(
        name="physics-fr",
        taxonomy="custom",
        count=12,
        languages=["en", "fr"],
        responses_per_instruction=3,
        budget=8,
        seed=42,
        min_margin=2.5,
    )

    recipe = recipe_to_proto(spec, DEFAULTS)

    assert recipe.name == "physics-fr"
    assert recipe.taxonomy_id == "custom"
    assert recipe.count == 12
    assert [(s.code, s.share) for s in recipe.languages] == [("en", 0.5), ("fr", 0.5)]
    assert recipe.responses_per_instruction == 3
    assert recipe.budget == 8
    assert recipe.seed == 42
    assert recipe.min_margin == 2.5


def test_default_responders_are_two_sampling_settings() -> None:
    responders = recipe_to_proto(RecipeSpec(count=5), DEFAULTS).models.responders

    assert len(responders) == 2
    assert responders[0].temperature != responders[1].temperature
    assert {r.model for r in responders} == {"openai/default-model"}


def test_judge_temperature_defaults_to_zero() -> None:
    judge = recipe_to_proto(RecipeSpec(count=5), DEFAULTS).models.judge

    assert judge.HasField("temperature")
    assert judge.temperature == 0.0


def test_responder_with_only_a_temperature_inherits_model_and_base() -> None:
    spec = RecipeSpec.model_validate({"count": 5, "models": {"responders": [{"temperature": 0.2}]}})

    responders = recipe_to_proto(spec, DEFAULTS).models.responders

    assert len(responders) == 1
    assert responders[0].model == "openai/default-model"
    assert responders[0].api_base == "http://llm:8000/v1"
    assert responders[0].temperature == pytest.approx(0.2)


def test_a_role_naming_its_own_model_gets_no_default_base() -> None:
    spec = RecipeSpec.model_validate(
        {"count": 5, "models": {"judge": {"model": "anthropic/claude-3-5-sonnet"}}}
    )

    recipe = recipe_to_proto(spec, DEFAULTS)

    assert recipe.models.judge.model == "anthropic/claude-3-5-sonnet"
    assert recipe.models.judge.api_base == ""
    # the other roles keep the defaults
    assert recipe.models.generator.api_base == "http://llm:8000/v1"


def test_a_role_with_model_and_base_keeps_both() -> None:
    spec = RecipeSpec.model_validate(
        {
            "count": 5,
            "models": {
                "generator": {
                    "model": "openai/big",
                    "api_base": "http://vllm:9000/v1",
                    "max_tokens": 1000,
                    "top_p": 0.9,
                    "max_concurrency": 8,
                    "input_cost_per_million": 0.5,
                    "output_cost_per_million": 1.5,
                    "response_format": "json_object",
                }
            },
        }
    )

    gen = recipe_to_proto(spec, DEFAULTS).models.generator

    assert (gen.model, gen.api_base) == ("openai/big", "http://vllm:9000/v1")
    assert gen.max_tokens == 1000
    assert gen.top_p == pytest.approx(0.9)
    assert gen.max_concurrency == 8
    assert gen.input_cost_per_million == 0.5
    assert gen.output_cost_per_million == 1.5
    assert gen.response_format == "json_object"


def test_unset_optional_model_fields_stay_unset() -> None:
    gen = recipe_to_proto(RecipeSpec(count=5), DEFAULTS).models.generator

    assert not gen.HasField("top_p")
    assert not gen.HasField("input_cost_per_million")
    assert not gen.HasField("output_cost_per_million")
    assert gen.max_concurrency == 0


def test_defaults_without_api_base_give_an_empty_base() -> None:
    defaults = LLMSettings(model="anthropic/claude-3-5-haiku", api_base=None)

    recipe = recipe_to_proto(RecipeSpec(count=5), defaults)

    assert recipe.models.generator.model == "anthropic/claude-3-5-haiku"
    assert recipe.models.generator.api_base == ""


# ---- job_view ----


def _progress(state: int) -> pb.JobProgress:
    job = pb.Job(
        id="job-1",
        recipe=pb.Recipe(name="demo", taxonomy_id="starter", count=4),
        state=state,  # type: ignore[arg-type]
        created_at_ms=1_700_000_000_000,
        taxonomy_version="1+abc",
        planned=4,
        datasets=[
            pb.DatasetInfo(
                kind="sft",
                format="jsonl",
                object_name="job-1/data/sft.jsonl",
                records=3,
                bytes=2048,
                sha256="ab",
            )
        ],
    )
    return pb.JobProgress(
        job=job,
        stages=[pb.StageProgress(stage="generate", done=3, failed=1)],
        usage=pb.Usage(prompt_tokens=120, completion_tokens=80, cost_usd=0.0012345678, calls=6),
        finished=4,
    )


@pytest.mark.parametrize(
    ("state", "name"),
    [
        (pb.JOB_STATE_PENDING, "pending"),
        (pb.JOB_STATE_RUNNING, "running"),
        (pb.JOB_STATE_SELECTING, "selecting"),
        (pb.JOB_STATE_SUCCEEDED, "succeeded"),
        (pb.JOB_STATE_FAILED, "failed"),
        (pb.JOB_STATE_CANCELLED, "cancelled"),
        (pb.JOB_STATE_UNSPECIFIED, "pending"),
    ],
)
def test_job_view_state_is_lowercase(state: int, name: str) -> None:
    assert job_view(_progress(state)).state == name


def test_job_view_maps_counts_and_usage() -> None:
    view = job_view(_progress(pb.JOB_STATE_RUNNING))

    assert isinstance(view, JobView)
    assert (view.id, view.name, view.taxonomy) == ("job-1", "demo", "starter")
    assert view.taxonomy_version == "1+abc"
    assert view.planned == 4
    assert view.finished == 4
    assert isinstance(view.planned, int)
    assert [(s.stage, s.done, s.failed) for s in view.stages] == [("generate", 3, 1)]
    assert view.usage.prompt_tokens == 120
    assert view.usage.completion_tokens == 80
    assert view.usage.calls == 6
    assert view.usage.cost_usd == 0.001235
    assert view.datasets[0].url == "/v1/jobs/job-1/files/data/sft.jsonl"
    assert view.datasets[0].path == "data/sft.jsonl"
    assert view.datasets[0].records == 3
    assert view.created_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert view.updated_at is None
    assert view.finished_at is None
    assert view.error is None
    assert view.selection is None
    assert view.recipe == {"name": "demo", "taxonomy_id": "starter", "count": 4}


def test_job_view_shows_error_and_selection() -> None:
    progress = _progress(pb.JOB_STATE_FAILED)
    progress.job.error = "taxonomy 'x' does not exist"
    progress.job.selection.CopyFrom(
        pb.SelectionReport(judged=3, failed=1, failures_by_stage={"generate": 1})
    )

    view = job_view(progress)

    assert view.error == "taxonomy 'x' does not exist"
    assert view.selection is not None
    assert (view.selection.judged, view.selection.failed) == (3, 1)
    assert view.selection.failures_by_stage == {"generate": 1}
    assert view.selection.sft_records == 0  # zero counts are shown, not left out


def test_job_view_serialises_to_json() -> None:
    data = job_view(_progress(pb.JOB_STATE_SUCCEEDED)).model_dump(mode="json")

    assert data["state"] == "succeeded"
    assert data["created_at"].startswith("2023-11-14T22:13:20")
    assert data["planned"] == 4


def test_roles_inherit_the_default_response_format_unless_they_set_one() -> None:
    defaults = LLMSettings(model="openai/m", api_base="http://l/v1", response_format="json_object")
    spec = RecipeSpec.model_validate({"count": 5, "models": {"judge": {"response_format": "none"}}})

    models = recipe_to_proto(spec, defaults).models

    assert models.generator.response_format == "json_object"
    assert {r.response_format for r in models.responders} == {"json_object"}
    assert models.judge.response_format == "none"
