"""The console's new-job form: it builds a recipe, previews its plan and submits it.

The form's fields become the same body ``POST /v1/jobs`` takes (``RecipeSpec``), checked by
the same validators and sent through the same ``Backend.create_job``, so the console can ask
for nothing the API would refuse, and the API's error messages are shown next to the form
with everything the person typed kept.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from gateway.backend import Backend
from gateway.schemas import RecipeSpec, recipe_to_proto
from gateway.tenants import Tenant
from gateway.ui.render import render
from gateway.ui.session import UiTenant, read_form
from gateway.ui.taxonomies import FORM_ERROR_STATUS, PlanTable, run_plan, tree_view
from taxoforge.errors import NotFoundError, PermanentError
from taxoforge.languages import LANGUAGES
from taxoforge.llm.endpoints import ModelChoiceError, ModelRegistry

__all__ = [
    "DIFFICULTIES",
    "STRATEGIES",
    "FormValues",
    "errors_by_field",
    "idempotency_key",
    "recipe_payload",
    "router",
]

router = APIRouter()

# What a recipe may ask for (the taxonomy service's plan checks the same names).
DIFFICULTIES = ("easy", "medium", "hard", "expert")
STRATEGIES = ("glan", "tap", "codeclm")
# Single-model roles with a select each; responders get two selects (two answers to compare).
_ROLES = ("generator", "judge", "tagger")
_RESPONDER_SELECTS = 2
_LANGUAGE_ROWS = 3
_TEXT_FIELDS = ("budget", "responses_per_instruction", "rubric_rounds", "seed")
_DEFAULTS: dict[str, str] = {
    "name": "job",
    "count": "100",
    "budget": "0",
    "responses_per_instruction": "2",
    "rubric_rounds": "1",
    "judging_mode": "rubric",
}


class FormValues:
    """What the form holds: the submitted fields, or the defaults of a blank form."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self.pairs = list(pairs)

    def get(self, name: str, default: str = "") -> str:
        for key, value in self.pairs:
            if key == name:
                return value
        return default

    def getlist(self, name: str) -> list[str]:
        return [value for key, value in self.pairs if key == name]

    def checked(self, name: str, value: str) -> bool:
        return value in self.getlist(name)


def _shares(values: FormValues, kind: str, names: Sequence[str]) -> list[dict[str, Any]]:
    """The ticked values of one dimension, each with its share when one was typed."""
    out: list[dict[str, Any]] = []
    for name in values.getlist(kind):
        if name not in names:
            continue  # not a choice the form offered
        item: dict[str, Any] = {"name": name}
        share = values.get(f"{kind}_share-{name}").strip()
        if share:
            item["share"] = share
        out.append(item)
    return out


def recipe_payload(
    values: FormValues,
    task_types: Sequence[str] = (),
) -> dict[str, Any]:
    """The ``POST /v1/jobs`` body the form describes (validated by RecipeSpec, not here).

    Blank optional fields are left out, so the API's defaults apply; blank required ones
    (count) are kept, so the error says which field is missing.
    """
    payload: dict[str, Any] = {
        "name": values.get("name").strip() or "job",
        "taxonomy": values.get("taxonomy").strip(),
        "count": values.get("count").strip(),
    }
    languages: list[dict[str, Any]] = []
    codes, shares = values.getlist("language"), values.getlist("language_share")
    for n, code in enumerate(codes):
        share = shares[n].strip() if n < len(shares) else ""
        if code.strip():
            languages.append({"code": code.strip(), **({"share": share} if share else {})})
    payload["languages"] = languages
    for kind, names, key in (
        ("difficulty", DIFFICULTIES, "difficulties"),
        ("strategy", STRATEGIES, "strategies"),
        ("task_type", tuple(task_types), "task_types"),
    ):
        chosen = _shares(values, kind, names)
        if chosen:
            payload[key] = chosen
    for name in _TEXT_FIELDS:
        text = values.get(name).strip()
        if text:
            payload[name] = text
    payload["judging"] = {"mode": values.get("judging_mode") or "rubric"}
    payload["contrastive"] = values.get("contrastive") == "on"
    models: dict[str, Any] = {}
    for role in _ROLES:
        if values.get(f"model_{role}"):
            models[role] = {"model": values.get(f"model_{role}")}
    responders = [{"model": m} for m in values.getlist("model_responder") if m]
    if responders:
        models["responders"] = responders
    if values.get("model_target"):
        models["target"] = {"model": values.get("model_target")}
    if models:
        payload["models"] = models
    return payload


def errors_by_field(exc: ValidationError) -> dict[str, list[str]]:
    """A RecipeSpec error as messages per form section: its top-level field (``count``,
    ``languages``, ``models``...), or ``""`` for the recipe as a whole."""
    out: dict[str, list[str]] = {}
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        where = ".".join(loc[1:])
        out.setdefault(loc[0] if loc else "", []).append(f"{where}: {msg}" if where else msg)
    return out


def idempotency_key(token: str, payload: dict[str, Any]) -> str:
    """One job per form and content: a double click or a resent form gives the job it made,
    while a form changed and sent again (same token) makes a new one."""
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]
    return f"console:{token}:{digest}"


@dataclass(frozen=True)
class _Choices:
    taxonomies: list[tuple[str, str]]
    task_types: list[tuple[str, str]]
    models: dict[str, list[str]]
    defaults: dict[str, str]


async def _choices(request: Request, backend: Backend, tenant: Tenant) -> _Choices:
    registry: ModelRegistry = request.app.state.models
    listed = await backend.taxonomies(tenant)
    taxonomies = [(t.id, f"{t.title} ({t.id}, v{t.version})") for t in listed.taxonomies]
    try:
        tasks = await backend.taxonomy("tasks", tenant)
        task_types = [
            (n.id, n.title) for top in tree_view(tasks.root) for n in top.walk() if n.leaf
        ]
    except NotFoundError:  # no task taxonomy on this deployment: no task types to offer
        task_types = []
    roles = (*_ROLES, "responder")
    return _Choices(
        taxonomies=taxonomies,
        task_types=task_types,
        models={role: registry.names(role) for role in roles},
        defaults={role: registry.default_for(role) for role in roles},
    )


async def _form_page(
    request: Request,
    backend: Backend,
    tenant: Tenant,
    values: FormValues,
    status: int = 200,
    errors: dict[str, list[str]] | None = None,
    plan: PlanTable | None = None,
) -> HTMLResponse:
    choices = await _choices(request, backend, tenant)
    rows = max(_LANGUAGE_ROWS, len(values.getlist("language")) + 1)
    return render(
        request,
        "new_job.html",
        status=status,
        values=values,
        choices=choices,
        languages=sorted(LANGUAGES.items()),
        language_rows=rows,
        difficulty_options=[(d, d) for d in DIFFICULTIES],
        strategy_options=[(s, s) for s in STRATEGIES],
        responder_selects=_RESPONDER_SELECTS,
        errors=errors or {},
        plan=plan,
    )


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


@router.get("/jobs/new", response_class=HTMLResponse)
async def new_job_page(
    request: Request,
    tenant: UiTenant,
    taxonomy: Annotated[str, Query(max_length=80)] = "starter",
) -> HTMLResponse:
    defaults = [*_DEFAULTS.items(), ("taxonomy", taxonomy), ("language", "en")]
    defaults.append(("form_token", secrets.token_hex(8)))
    return await _form_page(request, _backend(request), tenant, FormValues(defaults))


@router.post("/jobs/new", response_model=None)
async def submit_job(request: Request, tenant: UiTenant) -> Response:
    backend = _backend(request)
    form = await read_form(request)
    values = FormValues([(k, str(v)) for k, v in form.multi_items()])
    choices = await _choices(request, backend, tenant)
    payload = recipe_payload(values, [task for task, _ in choices.task_types])
    preview = values.get("action") == "preview"
    try:
        spec = RecipeSpec.model_validate(payload)
        if preview:
            plan = await run_plan(request, backend, tenant, spec)
            return await _form_page(request, backend, tenant, values, plan=plan)
        recipe = recipe_to_proto(spec, request.app.state.models)
        key = idempotency_key(values.get("form_token") or secrets.token_hex(8), payload)
        progress, _ = await backend.create_job(recipe, key, tenant)
    except ValidationError as exc:
        errors = errors_by_field(exc)
        return await _form_page(request, backend, tenant, values, FORM_ERROR_STATUS, errors)
    except ModelChoiceError as exc:
        errors = {"models": [f"{exc.field or 'model'}: {exc}"]}
        return await _form_page(request, backend, tenant, values, FORM_ERROR_STATUS, errors)
    except PermanentError as exc:  # the plan refused it: an unknown node, task type, ...
        return await _form_page(
            request, backend, tenant, values, FORM_ERROR_STATUS, {"": [str(exc)]}
        )
    return RedirectResponse(f"/ui/jobs/{progress.job.id}", status_code=303)
