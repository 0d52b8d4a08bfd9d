"""The console's taxonomy pages: the list, a version's tree, GLAN expansion, the review of
its proposals, and a dry-run plan preview.

Every page goes through the same Backend calls as the REST routes (``/v1/taxonomies...`` and
``POST /v1/plans``), so a tenant sees and changes exactly what its API key may: another
tenant's taxonomy is a 404 here as there, and a shared one is read-only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from gateway.backend import Backend
from gateway.schemas import RecipeSpec, recipe_to_proto
from gateway.taxonomy_schemas import ExpandSpec
from gateway.tenants import Tenant
from gateway.ui.render import render
from gateway.ui.session import UiTenant, read_form
from gateway.views import job_view
from taxoforge.errors import ConflictError, NotFoundError, PermanentError
from taxoforge.jobs.model import TERMINAL_STATES
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import taxonomy_pb2 as tpb

__all__ = [
    "FORM_ERROR_STATUS",
    "NodeView",
    "PlanTable",
    "ReviewPlan",
    "find_node",
    "parse_languages",
    "plan_table",
    "proposals",
    "review_plan",
    "router",
    "run_plan",
    "tree_view",
]

router = APIRouter()

TaxonomyId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
Version = Annotated[str, Query(pattern=r"^[0-9]*$")]
JobId = Annotated[str, Path(pattern=r"^j-[0-9a-f]{6,40}$")]
# A form sent back with what is wrong in it is a page to correct, not a failed one: 200, as
# browsers report a 4xx document as a failed load (and the console's tests fail on those).
FORM_ERROR_STATUS = 200
# A plan preview draws at most this many seeds: enough to see a composition, cheap to plan.
_MAX_PREVIEW = 100_000


@dataclass(frozen=True)
class NodeView:
    """A node as the tree shows it. ``share`` is the part of a weighted plan's seeds that
    go to it (its planning leaves' weights over all of them); None for a node no plan draws
    on (a proposal, a syllabus session, or under a proposal)."""

    id: str
    title: str
    description: str
    kind: str
    weight: float
    share: float | None
    proposed: bool
    origin: str
    attributes: list[tuple[str, str]]
    depth: int
    children: list[NodeView] = field(default_factory=list)

    @property
    def leaf(self) -> bool:
        return not self.children

    def walk(self) -> Iterator[NodeView]:
        """This node and every node under it, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()


def _attribute(value: pb.AttributeValue) -> str:
    return value.text if value.text else ", ".join(value.items)


def _planned(node: pb.TaxonomyNode) -> bool:
    """Whether plans draw on the node, given they draw on its parent (as the taxonomy
    service's planning leaves: accepted nodes, sessions travelling with their subject)."""
    return node.status != pb.NODE_STATUS_PROPOSED and node.kind != "session"


def _mass(node: pb.TaxonomyNode) -> float:
    """The weight a weighted plan gives the node: its own as a leaf, else its leaves'."""
    below = [c for c in node.children if _planned(c)]
    return math.fsum(_mass(c) for c in below) if below else node.weight


def tree_view(root: pb.TaxonomyNode) -> list[NodeView]:
    """The root's children as views (the root is the taxonomy itself, shown as the page)."""
    total = _mass(root) if any(_planned(c) for c in root.children) else 0.0

    def view(node: pb.TaxonomyNode, planned: bool, depth: int) -> NodeView:
        planned = planned and _planned(node)
        return NodeView(
            id=node.id,
            title=node.title,
            description=node.description,
            kind=node.kind,
            weight=node.weight,
            share=_mass(node) / total if planned and total > 0 else None,
            proposed=node.status == pb.NODE_STATUS_PROPOSED,
            origin=node.origin,
            attributes=sorted((k, _attribute(v)) for k, v in node.attributes.items()),
            depth=depth,
            children=[view(c, planned, depth + 1) for c in node.children],
        )

    return [view(c, True, 1) for c in root.children]


def proposals(nodes: Sequence[NodeView]) -> list[NodeView]:
    """The topmost proposed nodes (each with what was proposed under it)."""
    out: list[NodeView] = []
    for node in nodes:
        if node.proposed:
            out.append(node)
        else:
            out.extend(proposals(node.children))
    return out


def find_node(nodes: Sequence[NodeView], node_id: str) -> NodeView | None:
    for top in nodes:
        for node in top.walk():
            if node.id == node_id:
                return node
    return None


# ---- review ----


class ReviewFormError(ValueError):
    """What is wrong with a submitted review, in words for the page."""


@dataclass(frozen=True)
class ReviewPlan:
    """A submitted review: proposals accepted and rejected, and new titles."""

    accept: list[str]
    reject: list[str]
    renames: list[tuple[str, str]]
    accept_rest: bool

    @property
    def reviews(self) -> bool:
        return bool(self.accept or self.reject or self.accept_rest)


def review_plan(form: Mapping[str, str], nodes: Sequence[NodeView]) -> ReviewPlan:
    """The review a form asks for. Fields: ``decision-<id>`` (accept, reject or empty: later),
    ``title-<id>`` (a new title), ``accept_rest`` (accept every proposal not rejected).

    Only proposed nodes are reviewed (other fields are ignored); a node under a rejected one
    goes with it, so its decision and title are not sent.

    Raises:
        ReviewFormError: an empty title, or nothing to do.
    """
    accept: list[str] = []
    reject: list[str] = []
    renames: list[tuple[str, str]] = []
    problems: list[str] = []

    def visit(node: NodeView, dropped: bool) -> None:
        decision = form.get(f"decision-{node.id}", "")
        rejected = dropped or (node.proposed and decision == "reject")
        if node.proposed and not dropped:
            if decision == "accept":
                accept.append(node.id)
            elif decision == "reject":
                reject.append(node.id)
        title = form.get(f"title-{node.id}")
        if title is not None and not rejected:
            title = title.strip()
            if not title:
                problems.append(f"{node.id}: a title cannot be empty")
            elif title != node.title:
                renames.append((node.id, title))
        for child in node.children:
            visit(child, rejected)

    for top in proposals(nodes):
        visit(top, False)
    if problems:
        raise ReviewFormError("; ".join(problems))
    plan = ReviewPlan(accept, reject, renames, form.get("accept_rest") == "on")
    if not (plan.reviews or plan.renames):
        raise ReviewFormError("nothing to publish: accept, reject or rename a proposal first")
    return plan


# ---- plans ----


@dataclass(frozen=True)
class PlanRow:
    node_id: str
    title: str
    counts: list[int]
    total: int


@dataclass(frozen=True)
class PlanTable:
    """A dry-run plan as seeds per leaf (rows) and language (columns)."""

    planned: int
    taxonomy_version: str
    languages: list[str]
    rows: list[PlanRow]
    language_totals: list[int]
    # Seeds per value of the other dimensions (difficulty, task_type), as the plan counts them.
    totals: dict[str, list[tuple[str, int]]]


def plan_table(resp: tpb.PlanJobResponse, titles: Mapping[str, str]) -> PlanTable:
    """The plan's cells pivoted: one row per leaf in plan order, one column per language."""
    languages: list[str] = []
    rows: dict[str, dict[str, int]] = {}
    for cell in resp.cells:
        if cell.language not in languages:
            languages.append(cell.language)
        row = rows.setdefault(cell.node_id, {})
        row[cell.language] = row.get(cell.language, 0) + cell.count
    table = [
        PlanRow(
            node_id=node_id,
            title=titles.get(node_id, node_id),
            counts=[counts.get(lang, 0) for lang in languages],
            total=sum(counts.values()),
        )
        for node_id, counts in rows.items()
    ]
    totals: dict[str, list[tuple[str, int]]] = {}
    for total in resp.totals:
        if total.dimension not in ("node", "language"):
            totals.setdefault(total.dimension, []).append((total.value, total.count))
    return PlanTable(
        planned=resp.planned,
        taxonomy_version=resp.taxonomy_version,
        languages=languages,
        rows=table,
        language_totals=[sum(r.counts[i] for r in table) for i in range(len(languages))],
        totals=totals,
    )


def parse_languages(text: str) -> list[dict[str, Any]]:
    """``"en, fr:0.25"`` as a recipe's languages: codes, each with an optional share.

    Raises:
        ValueError: a share that is not a number.
    """
    out: list[dict[str, Any]] = []
    for part in text.replace(";", ",").split(","):
        code, _, share = part.strip().partition(":")
        if not code.strip():
            continue
        item: dict[str, Any] = {"code": code.strip()}
        if share.strip():
            try:
                item["share"] = float(share)
            except ValueError:
                raise ValueError(f"{part.strip()!r}: a share is a number, as en:0.5") from None
        out.append(item)
    return out


async def run_plan(
    request: Request, backend: Backend, tenant: Tenant, spec: RecipeSpec
) -> PlanTable:
    """A recipe planned exactly as ``POST /v1/plans`` plans it, as a table.

    Raises:
        PermanentError / ModelChoiceError: the recipe names what does not exist.
    """
    recipe = recipe_to_proto(spec, request.app.state.models)
    try:
        resp = await backend.plan(recipe, tenant)
    except NotFoundError as exc:  # a name in the form is wrong, as POST /v1/plans says (422)
        raise PermanentError(str(exc)) from exc
    titles: dict[str, str] = {}
    try:
        taxonomy = await backend.taxonomy(recipe.taxonomy_id, tenant, resp.taxonomy_version)
        titles = {n.id: n.title for top in tree_view(taxonomy.root) for n in top.walk()}
    except NotFoundError:  # removed in between: ids alone still say it
        pass
    return plan_table(resp, titles)


def validation_messages(exc: ValidationError) -> list[str]:
    """A pydantic error as short lines: ``field: message``."""
    out = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        out.append(f"{where}: {msg}" if where else msg)
    return out


# ---- pages ----


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


@router.get("/taxonomies", response_class=HTMLResponse)
async def taxonomies_page(request: Request, tenant: UiTenant) -> HTMLResponse:
    listed = await _backend(request).taxonomies(tenant)
    return render(request, "taxonomies.html", taxonomies=list(listed.taxonomies))


async def _tree_page(
    request: Request,
    tenant: Tenant,
    taxonomy_id: str,
    version: str,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    backend = _backend(request)
    taxonomy = await backend.taxonomy(taxonomy_id, tenant, version)
    history = await backend.versions(taxonomy_id, tenant)
    nodes = tree_view(taxonomy.root)
    latest = history.versions[-1].version if history.versions else taxonomy.version
    context.setdefault("expand_error", "")
    context.setdefault("expand_values", {})
    context.setdefault("notice", "")
    return render(
        request,
        "taxonomy.html",
        status=status,
        taxonomy=taxonomy,
        versions=list(history.versions),
        latest=latest,
        nodes=nodes,
        proposed=sum(1 for top in proposals(nodes) for _ in top.walk()),
        expandable=[n for top in nodes for n in top.walk() if n.kind != "session"],
        **context,
    )


@router.get("/taxonomies/{taxonomy_id}", response_class=HTMLResponse)
async def taxonomy_page(
    request: Request,
    taxonomy_id: TaxonomyId,
    tenant: UiTenant,
    version: Version = "",
    published: Annotated[str, Query(pattern=r"^[0-9]*$")] = "",
) -> HTMLResponse:
    notice = f"Published version {published}." if published else ""
    return await _tree_page(request, tenant, taxonomy_id, version, notice=notice)


@router.post("/taxonomies/{taxonomy_id}/expand", response_model=None)
async def expand(request: Request, taxonomy_id: TaxonomyId, tenant: UiTenant) -> Response:
    form = await read_form(request)
    values = {k: str(form.get(k, "")) for k in ("node", "levels", "samples", "max_children")}
    base = str(form.get("base_version", ""))
    try:
        spec = ExpandSpec(
            nodes=[values["node"]],
            levels=int(values["levels"] or 1),
            samples=int(values["samples"] or 3),
            max_children=int(values["max_children"] or 12),
            base_version=base if base.isdigit() else "",
            name=f"expand {values['node']}"[:120],
        )
        proto = spec.to_proto(taxonomy_id, request.app.state.models)
        progress = await _backend(request).expand(proto, tenant)
    except ValueError as exc:  # ValidationError too: a number field that is not one
        message = (
            "; ".join(validation_messages(exc))
            if isinstance(exc, ValidationError)
            else "levels, samples and subjects are whole numbers"
        )
        return await _tree_page(
            request,
            tenant,
            taxonomy_id,
            base,
            FORM_ERROR_STATUS,
            expand_error=message,
            expand_values=values,
        )
    except (PermanentError, ConflictError) as exc:
        # A shared taxonomy (read-only), a moved-on base version, an unknown node: said on
        # the page next to the form, with what was typed.
        return await _tree_page(
            request,
            tenant,
            taxonomy_id,
            base,
            FORM_ERROR_STATUS,
            expand_error=str(exc),
            expand_values=values,
        )
    return RedirectResponse(
        f"/ui/taxonomies/{taxonomy_id}/expansions/{progress.job.id}", status_code=303
    )


@router.get("/taxonomies/{taxonomy_id}/expansions/{job_id}", response_class=HTMLResponse)
async def expansion_page(
    request: Request, taxonomy_id: TaxonomyId, job_id: JobId, tenant: UiTenant
) -> HTMLResponse:
    progress = await _backend(request).progress(job_id, tenant)
    view = job_view(progress)
    if view.kind != "expand" or view.taxonomy != taxonomy_id:
        raise NotFoundError(f"expansion {job_id!r} of taxonomy {taxonomy_id!r} does not exist")
    return render(
        request,
        "taxonomy_expansion.html",
        taxonomy_id=taxonomy_id,
        job=view,
        done=progress.job.state in TERMINAL_STATES,
    )


async def _review_page(
    request: Request,
    tenant: Tenant,
    taxonomy_id: str,
    version: str,
    form: Mapping[str, str] | None = None,
    error: str = "",
    status: int = 200,
) -> HTMLResponse:
    taxonomy = await _backend(request).taxonomy(taxonomy_id, tenant, version)
    nodes = tree_view(taxonomy.root)
    return render(
        request,
        "taxonomy_review.html",
        status=status,
        taxonomy=taxonomy,
        proposals=proposals(nodes),
        form=dict(form or {}),
        error=error,
    )


@router.get("/taxonomies/{taxonomy_id}/review", response_class=HTMLResponse)
async def review_page(
    request: Request, taxonomy_id: TaxonomyId, tenant: UiTenant, version: Version = ""
) -> HTMLResponse:
    return await _review_page(request, tenant, taxonomy_id, version)


@router.post("/taxonomies/{taxonomy_id}/review", response_model=None)
async def publish_review(request: Request, taxonomy_id: TaxonomyId, tenant: UiTenant) -> Response:
    backend = _backend(request)
    form = {k: str(v) for k, v in (await read_form(request)).items()}
    base = form.get("base_version", "")
    base = base if base.isdigit() else ""
    taxonomy = await backend.taxonomy(taxonomy_id, tenant, base)
    try:
        plan = review_plan(form, tree_view(taxonomy.root))
        version = taxonomy.version
        # One review, then the new titles on top of it: a review that is refused changes
        # nothing, renames included.
        if plan.reviews:
            reviewed = await backend.review(
                tpb.ReviewTaxonomyRequest(
                    id=taxonomy_id,
                    base_version=version,
                    accept=plan.accept,
                    reject=plan.reject,
                    accept_rest=plan.accept_rest,
                ),
                tenant,
            )
            version = reviewed.version
        if plan.renames:
            edited = await backend.edit(
                tpb.EditTaxonomyRequest(
                    id=taxonomy_id,
                    base_version=version,
                    message=f"review: {len(plan.renames)} renamed",
                    operations=[
                        tpb.EditOperation(op="rename", node_id=node_id, title=title)
                        for node_id, title in plan.renames
                    ],
                ),
                tenant,
            )
            version = edited.version
    except (ReviewFormError, PermanentError, ConflictError) as exc:
        return await _review_page(
            request, tenant, taxonomy_id, base, form, str(exc), FORM_ERROR_STATUS
        )
    return RedirectResponse(
        f"/ui/taxonomies/{taxonomy_id}?version={version}&published={version}", status_code=303
    )


@router.get("/taxonomies/{taxonomy_id}/plan", response_class=HTMLResponse)
async def plan_page(
    request: Request,
    taxonomy_id: TaxonomyId,
    tenant: UiTenant,
    version: Version = "",
    count: Annotated[str, Query(max_length=12)] = "100",
    languages: Annotated[str, Query(max_length=400)] = "en",
) -> HTMLResponse:
    backend = _backend(request)
    taxonomy = await backend.taxonomy(taxonomy_id, tenant, version)
    table: PlanTable | None = None
    error = ""
    try:
        n = int(count)
        if not 1 <= n <= _MAX_PREVIEW:
            raise PermanentError(f"count: from 1 to {_MAX_PREVIEW:,} for a preview")
        spec = RecipeSpec(
            taxonomy=f"{taxonomy_id}@{taxonomy.version}",
            count=n,
            languages=parse_languages(languages),  # type: ignore[arg-type]
        )
        table = await run_plan(request, backend, tenant, spec)
    except ValidationError as exc:
        error = "; ".join(validation_messages(exc))
    except ValueError as exc:
        error = "count is a whole number" if "int" in str(exc) else str(exc)
    except PermanentError as exc:
        error = str(exc)
    return render(
        request,
        "taxonomy_plan.html",
        status=FORM_ERROR_STATUS if error else 200,
        taxonomy=taxonomy,
        count=count,
        languages=languages,
        table=table,
        error=error,
    )
