"""The new-job form's pure parts: the recipe it builds, its errors per field, its
idempotency key, and the page rendered with what was typed (no network)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pydantic import ValidationError
from starlette.requests import Request

from gateway.schemas import RecipeSpec
from gateway.ui.new_job import (
    DIFFICULTIES,
    STRATEGIES,
    FormValues,
    errors_by_field,
    idempotency_key,
    recipe_payload,
)
from gateway.ui.render import render
from gateway.ui.taxonomies import plan_table
from taxoforge.v1 import taxonomy_pb2 as tpb


def request() -> Request:
    app = SimpleNamespace(state=SimpleNamespace(settings=SimpleNamespace(auth="keys")))
    return Request({"type": "http", "app": app, "method": "GET", "path": "/ui", "headers": []})


TASKS = ["open-qa", "proof"]
ROLES = ("generator", "judge", "tagger", "responder")


def _form(*extra: tuple[str, str]) -> FormValues:
    return FormValues(
        [
            ("form_token", "abc"),
            ("name", " My job "),
            ("taxonomy", "starter@2"),
            ("count", "40"),
            ("language", "en"),
            ("language_share", "0.75"),
            ("language", ""),  # an empty row
            ("language_share", ""),
            ("language", "fr"),
            ("language_share", "0.25"),
            ("difficulty", "easy"),
            ("difficulty", "hard"),
            ("difficulty_share-easy", ""),
            ("difficulty_share-medium", "0.9"),  # not ticked: left out
            ("task_type", "proof"),
            ("task_type", "not-offered"),
            ("strategy", "glan"),
            ("strategy_share-glan", " "),
            ("budget", "10"),
            ("responses_per_instruction", ""),
            ("judging_mode", "pairwise"),
            ("model_generator", ""),
            ("model_responder", "default"),
            ("model_responder", ""),
            ("model_judge", "default"),
            *extra,
        ]
    )


def test_the_form_builds_the_recipe_the_api_takes() -> None:
    payload = recipe_payload(_form(), TASKS)
    assert payload == {
        "name": "My job",
        "taxonomy": "starter@2",
        "count": "40",
        "languages": [{"code": "en", "share": "0.75"}, {"code": "fr", "share": "0.25"}],
        "difficulties": [{"name": "easy"}, {"name": "hard"}],
        "strategies": [{"name": "glan"}],
        "task_types": [{"name": "proof"}],
        "budget": "10",
        "judging": {"mode": "pairwise"},
        "contrastive": False,
        "models": {"judge": {"model": "default"}, "responders": [{"model": "default"}]},
    }
    spec = RecipeSpec.model_validate(payload)
    assert spec.count == 40 and spec.languages[1].share == 0.25
    assert [d.share for d in spec.difficulties] == [0.5, 0.5]
    assert spec.task_taxonomy == "tasks" and spec.judging.mode == "pairwise"


def test_a_blank_form_still_names_the_required_fields() -> None:
    payload = recipe_payload(FormValues([]))
    assert payload["count"] == "" and payload["languages"] == []
    assert "models" not in payload and "difficulties" not in payload
    with pytest.raises(ValidationError) as caught:
        RecipeSpec.model_validate(payload)
    errors = errors_by_field(caught.value)
    assert set(errors) == {"taxonomy", "count", "languages"}


def test_errors_are_grouped_by_form_section() -> None:
    payload = recipe_payload(_form(("seed", "-1")), TASKS)
    payload["languages"][0]["code"] = "xx"
    with pytest.raises(ValidationError) as caught:
        RecipeSpec.model_validate(payload)
    errors = errors_by_field(caught.value)
    assert "unknown language 'xx'" in errors["languages"][0]
    assert errors["languages"][0].startswith("0.code: ")
    assert "greater than or equal to 0" in errors["seed"][0]


def test_shares_that_do_not_sum_to_one_are_the_recipe_s_error() -> None:
    values = FormValues(
        [("taxonomy", "starter"), ("count", "5"), ("language", "en"), ("language_share", "0.5")]
    )
    with pytest.raises(ValidationError) as caught:
        RecipeSpec.model_validate(recipe_payload(values))
    assert errors_by_field(caught.value) == {"": ["language shares sum to 0.5; they must sum to 1"]}


def test_the_idempotency_key_follows_the_token_and_the_content() -> None:
    payload = recipe_payload(_form(), TASKS)
    same = recipe_payload(_form(), TASKS)
    assert idempotency_key("abc", payload) == idempotency_key("abc", same)
    changed = recipe_payload(_form(("contrastive", "on")), TASKS)
    assert idempotency_key("abc", payload) != idempotency_key("abc", changed)
    assert idempotency_key("abc", payload) != idempotency_key("abd", payload)


def test_the_page_keeps_every_typed_value_and_shows_errors_next_to_fields() -> None:
    choices = type(
        "Choices",
        (),
        {
            "taxonomies": [("starter", "Starter (starter, v1)")],
            "task_types": [("open-qa", "Open QA"), ("proof", "Proof")],
            "models": {role: ["default", "big"] for role in ROLES},
            "defaults": dict.fromkeys(ROLES, "default"),
        },
    )()
    plan = plan_table(
        tpb.PlanJobResponse(planned=3, cells=[tpb.PlanCell(node_id="a", language="en", count=3)]),
        {},
    )
    page = bytes(
        render(
            request(),
            "new_job.html",
            values=_form(("model_tagger", "big")),
            choices=choices,
            languages=[("en", "English"), ("fr", "French")],
            language_rows=4,
            difficulty_options=[(d, d) for d in DIFFICULTIES],
            strategy_options=[(s, s) for s in STRATEGIES],
            responder_selects=2,
            errors={"count": ["count: too small"], "": ["taxonomy 'x' does not exist"]},
            plan=plan,
        ).body
    ).decode()
    # What was typed comes back: the unknown taxonomy version, languages and their shares,
    # ticked boxes, the judging mode and the models.
    assert '<option value="starter@2" selected>' in page
    share = 'id="language-share-{}" name="language_share" inputmode="decimal" size="6" value="{}"'
    assert share.format(0, "0.75") in page and share.format(2, "0.25") in page
    assert page.count('<option value="fr" selected>') == 1
    assert 'id="difficulty-hard" name="difficulty" value="hard" checked' in page
    assert 'id="difficulty-medium" name="difficulty" value="medium">' in page
    assert 'name="difficulty_share-medium" inputmode="decimal" size="6" value="0.9"' in page
    assert 'id="task_type-proof" name="task_type" value="proof" checked' in page
    assert '<option value="pairwise" selected>' in page
    assert '<option value="big" selected>big</option>' in page
    assert 'id="count-errors"' in page and "count: too small" in page
    assert "taxonomy &#39;x&#39; does not exist" in page and 'role="alert"' in page
    assert page.count("<label for=") >= page.count("<select ") + page.count("<input id=")
    assert 'data-leaf="a"' in page
