"""REST bodies: recipe validation, resolution to the protobuf recipe, and the job view."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.schemas import LanguageSpec, RecipeSpec, recipe_to_proto
from gateway.views import JobView, job_view
from taxoforge.llm.endpoints import LOCAL_EMBEDDER, Endpoint, ModelRegistry
from taxoforge.v1 import common_pb2 as pb

_ENDPOINTS = (
    Endpoint("default", "openai/default-model", "http://llm:8000/v1"),
    Endpoint("big", "openai/big", "http://vllm:9000/v1"),
    Endpoint("judge-only", "openai/judge", "http://vllm:9001/v1", roles=("judge",)),
    Endpoint("embed", "openai/text-embedding-3-small", roles=("embedder",)),
    Endpoint(LOCAL_EMBEDDER, LOCAL_EMBEDDER, roles=("embedder",)),
)
MODELS = ModelRegistry(_ENDPOINTS)


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
    recipe = recipe_to_proto(RecipeSpec(count=5), MODELS)

    roles = [recipe.models.generator, *recipe.models.responders, recipe.models.judge]
    for cfg in roles:
        assert cfg.model == "default"
        assert cfg.HasField("temperature")
        assert cfg.HasField("max_tokens")
    assert recipe.models.embedder.model == "local/all-minilm-l6-v2"


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

    recipe = recipe_to_proto(spec, MODELS)

    assert recipe.name == "physics-fr"
    assert recipe.taxonomy_id == "custom"
    assert recipe.count == 12
    assert [(s.code, s.share) for s in recipe.languages] == [("en", 0.5), ("fr", 0.5)]
    assert recipe.responses_per_instruction == 3
    assert recipe.budget == 8
    assert recipe.seed == 42
    assert recipe.min_margin == 2.5


def test_default_responders_are_two_sampling_settings() -> None:
    responders = recipe_to_proto(RecipeSpec(count=5), MODELS).models.responders

    assert len(responders) == 2
    assert responders[0].temperature != responders[1].temperature
    assert {r.model for r in responders} == {"default"}


def test_judge_temperature_defaults_to_zero() -> None:
    judge = recipe_to_proto(RecipeSpec(count=5), MODELS).models.judge

    assert judge.HasField("temperature")
    assert judge.temperature == 0.0


def test_responder_with_only_a_temperature_gets_the_default_model() -> None:
    spec = RecipeSpec.model_validate({"count": 5, "models": {"responders": [{"temperature": 0.2}]}})

    responders = recipe_to_proto(spec, MODELS).models.responders

    assert len(responders) == 1
    assert responders[0].model == "default"
    assert responders[0].temperature == pytest.approx(0.2)


def test_a_role_naming_a_declared_model_gets_it_with_its_sampling() -> None:
    spec = RecipeSpec.model_validate(
        {"count": 5, "models": {"generator": {"model": "big", "max_tokens": 1000, "top_p": 0.9}}}
    )

    recipe = recipe_to_proto(spec, MODELS)

    gen = recipe.models.generator
    assert (gen.model, gen.max_tokens) == ("big", 1000)
    assert gen.top_p == pytest.approx(0.9)
    assert recipe.models.judge.model == "default"  # the other roles keep the default


def test_unset_optional_model_fields_stay_unset() -> None:
    gen = recipe_to_proto(RecipeSpec(count=5), MODELS).models.generator

    assert not gen.HasField("top_p")


def test_the_operators_per_role_defaults_apply() -> None:
    models = ModelRegistry(
        [*_ENDPOINTS], {"judge": "judge-only", "embedder": "embed", "generator": "big"}
    )

    recipe = recipe_to_proto(RecipeSpec(count=5), models)

    assert recipe.models.judge.model == "judge-only"
    assert recipe.models.generator.model == "big"
    assert recipe.models.embedder.model == "embed"
    assert {r.model for r in recipe.models.responders} == {"default"}


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
