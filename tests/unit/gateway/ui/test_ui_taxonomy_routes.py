"""The taxonomy pages' and the new-job form's routes over an in-memory backend (no network):
what they ask the backend, where they send the browser, and the errors they show."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.tenants import Tenant
from gateway.ui.taxonomies import FORM_ERROR_STATUS
from taxoforge.errors import ConflictError, NotFoundError
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import taxonomy_pb2 as tpb

PROPOSED = pb.NODE_STATUS_PROPOSED


def _taxonomy(version: str = "2") -> pb.Taxonomy:
    subject = pb.TaxonomyNode(id="t-optics-lenses", title="Lenses", status=PROPOSED, weight=1)
    other = pb.TaxonomyNode(id="t-optics-waves", title="Waves", status=PROPOSED, weight=1)
    optics = pb.TaxonomyNode(id="t-optics", title="Optics", weight=1, children=[subject, other])
    root = pb.TaxonomyNode(id="t", title="T", children=[optics])
    return pb.Taxonomy(id="t", version=version, title="T", root=root)


class FakeBackend:
    """The Backend calls the pages make, recorded; "secret" is another tenant's."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.expand_error: Exception | None = None

    def _check(self, taxonomy_id: str) -> None:
        if taxonomy_id == "secret":
            raise NotFoundError(f"taxonomy {taxonomy_id!r} does not exist")

    async def taxonomies(self, tenant: Tenant) -> tpb.ListTaxonomiesResponse:
        return tpb.ListTaxonomiesResponse(
            taxonomies=[tpb.TaxonomySummary(id="t", version="2", title="T", leaves=2)]
        )

    async def taxonomy(self, taxonomy_id: str, tenant: Tenant, version: str = "") -> pb.Taxonomy:
        self._check(taxonomy_id)
        if taxonomy_id == "tasks":
            leaf = pb.TaxonomyNode(id="open-qa", title="Open QA", weight=1)
            return pb.Taxonomy(id="tasks", version="1", root=pb.TaxonomyNode(children=[leaf]))
        return _taxonomy(version or "2")

    async def versions(self, taxonomy_id: str, tenant: Tenant) -> pb.TaxonomyIndex:
        self._check(taxonomy_id)
        return pb.TaxonomyIndex(
            id="t", versions=[pb.TaxonomyVersionInfo(version=v) for v in ("1", "2")]
        )

    async def review(self, request: tpb.ReviewTaxonomyRequest, tenant: Tenant) -> pb.Taxonomy:
        self.calls.append(("review", request))
        return pb.Taxonomy(id="t", version="3")

    async def edit(self, request: tpb.EditTaxonomyRequest, tenant: Tenant) -> pb.Taxonomy:
        self.calls.append(("edit", request))
        return pb.Taxonomy(id="t", version="4")

    async def expand(self, request: pb.ExpandRequest, tenant: Tenant) -> pb.JobProgress:
        self._check(request.taxonomy_id)
        self.calls.append(("expand", request))
        if self.expand_error is not None:
            raise self.expand_error
        return pb.JobProgress(job=pb.Job(id="j-abcdef1234", kind="expand"))

    async def plan(self, recipe: pb.Recipe, tenant: Tenant) -> tpb.PlanJobResponse:
        self._check(recipe.taxonomy_id)
        self.calls.append(("plan", recipe))
        cells = [tpb.PlanCell(node_id="t-optics", language="en", count=recipe.count)]
        return tpb.PlanJobResponse(planned=recipe.count, taxonomy_version="2", cells=cells)

    async def create_job(
        self, recipe: pb.Recipe, key: str | None, tenant: Tenant
    ) -> tuple[pb.JobProgress, bool]:
        self.calls.append(("create_job", (recipe, key)))
        return pb.JobProgress(job=pb.Job(id="j-0123456789")), True


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def client(backend: FakeBackend) -> Iterator[TestClient]:
    app = create_app(GatewaySettings(auth="none"))
    app.state.backend = backend  # no lifespan: nothing connects
    app.state.settings = GatewaySettings(auth="none")
    yield TestClient(app, follow_redirects=False)


def test_the_tree_page_and_its_versions(client: TestClient) -> None:
    resp = client.get("/ui/taxonomies/t?version=2")
    assert resp.status_code == 200
    assert 'id="node-t-optics-lenses"' in resp.text and "Review 2 proposed nodes" in resp.text
    assert client.get("/ui/taxonomies").text.count('data-taxonomy="t"') == 1


@pytest.mark.parametrize(
    "path", ["/ui/taxonomies/secret", "/ui/taxonomies/secret/review", "/ui/taxonomies/secret/plan"]
)
def test_a_taxonomy_the_tenant_may_not_read_is_not_found(client: TestClient, path: str) -> None:
    resp = client.get(path)
    assert resp.status_code == 404 and resp.headers["content-type"].startswith("text/html")


def test_publishing_reviews_then_renames_on_the_reviewed_version(
    client: TestClient, backend: FakeBackend
) -> None:
    resp = client.post(
        "/ui/taxonomies/t/review",
        data={
            "base_version": "2",
            "decision-t-optics-lenses": "accept",
            "decision-t-optics-waves": "reject",
            "title-t-optics-lenses": "Lens making",
            "title-t-optics-waves": "Renamed but rejected",
        },
    )
    assert resp.status_code == 303
    assert resp.headers["location"] == "/ui/taxonomies/t?version=4&published=4"
    (kind, review), (kind2, edit) = backend.calls
    assert (kind, kind2) == ("review", "edit")
    assert review.base_version == "2" and list(review.accept) == ["t-optics-lenses"]
    assert list(review.reject) == ["t-optics-waves"]
    assert edit.base_version == "3"
    assert [(op.op, op.node_id, op.title) for op in edit.operations] == [
        ("rename", "t-optics-lenses", "Lens making")
    ]


def test_an_empty_review_changes_nothing_and_says_so(
    client: TestClient, backend: FakeBackend
) -> None:
    resp = client.post(
        "/ui/taxonomies/t/review", data={"base_version": "2", "decision-t-optics-waves": ""}
    )
    assert resp.status_code == FORM_ERROR_STATUS and "nothing to publish" in resp.text
    assert backend.calls == []


def test_an_expansion_starts_and_its_page_follows(client: TestClient, backend: FakeBackend) -> None:
    resp = client.post(
        "/ui/taxonomies/t/expand",
        data={
            "node": "t-optics",
            "levels": "2",
            "samples": "2",
            "max_children": "5",
            "base_version": "2",
        },
    )
    assert resp.status_code == 303
    assert resp.headers["location"] == "/ui/taxonomies/t/expansions/j-abcdef1234"
    ((_, request),) = backend.calls
    assert list(request.node_ids) == ["t-optics"] and request.levels == 2
    assert (request.samples, request.max_children, request.base_version) == (2, 5, "2")


def test_a_refused_expansion_is_shown_next_to_the_form(
    client: TestClient, backend: FakeBackend
) -> None:
    backend.expand_error = ConflictError("taxonomy 't' is shared and read-only")
    resp = client.post(
        "/ui/taxonomies/t/expand",
        data={"node": "t-optics", "levels": "1", "samples": "7", "max_children": "5"},
    )
    assert resp.status_code == FORM_ERROR_STATUS and "shared and read-only" in resp.text
    assert 'name="samples" type="number" min="1" max="20" value="7"' in resp.text
    resp = client.post("/ui/taxonomies/t/expand", data={"node": "t-optics", "samples": "x"})
    assert resp.status_code == FORM_ERROR_STATUS and "whole numbers" in resp.text


def _job_form(**changes: str) -> dict[str, Any]:
    form: dict[str, Any] = {
        "form_token": "tok",
        "name": "n",
        "taxonomy": "t",
        "count": "5",
        "language": ["en", ""],
        "language_share": ["", ""],
        "task_type": "open-qa",
        "judging_mode": "rubric",
        "action": "submit",
    }
    form.update(changes)
    return form


def test_the_form_previews_the_plan_and_submits_once_per_content(
    client: TestClient, backend: FakeBackend
) -> None:
    resp = client.post("/ui/jobs/new", data=_job_form(action="preview"))
    assert resp.status_code == 200 and "Plan: 5 seeds" in resp.text
    assert [kind for kind, _ in backend.calls] == ["plan"]
    first = client.post("/ui/jobs/new", data=_job_form())
    again = client.post("/ui/jobs/new", data=_job_form())
    other = client.post("/ui/jobs/new", data=_job_form(count="6"))
    assert first.status_code == 303 and first.headers["location"] == "/ui/jobs/j-0123456789"
    keys = [call[1][1] for call in backend.calls if call[0] == "create_job"]
    assert keys[0] == keys[1] != keys[2]
    recipe = backend.calls[1][1][0]
    assert recipe.taxonomy_id == "t" and recipe.count == 5
    assert [t.name for t in recipe.task_types] == ["open-qa"]
    assert again.status_code == other.status_code == 303


def test_a_model_not_declared_is_refused_next_to_the_models(
    client: TestClient, backend: FakeBackend
) -> None:
    resp = client.post("/ui/jobs/new", data=_job_form(model_judge="nope"))
    assert resp.status_code == FORM_ERROR_STATUS and 'id="models-errors"' in resp.text
    assert "nope" in resp.text and backend.calls == []


def test_the_form_names_the_configured_models_per_role(client: TestClient) -> None:
    page = client.get("/ui/jobs/new?taxonomy=t").text
    assert '<option value="">default (default)</option>' in page
    assert '<option value="t" selected>' in page
    assert 'id="task_type-open-qa"' in page


def _expansion(state: pb.JobState.ValueType, taxonomy_id: str = "t") -> pb.JobProgress:
    job = pb.Job(
        id="j-abcdef1234",
        kind="expand",
        state=state,
        expand=pb.ExpandRequest(taxonomy_id=taxonomy_id, node_ids=["t-optics"]),
        result_taxonomy_version="3" if state == pb.JOB_STATE_SUCCEEDED else "",
    )
    return pb.JobProgress(job=job)


def test_an_expansion_page_follows_the_job_then_links_to_its_review(
    client: TestClient, backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = [_expansion(pb.JOB_STATE_RUNNING), _expansion(pb.JOB_STATE_SUCCEEDED)]

    async def progress(job_id: str, tenant: Tenant) -> pb.JobProgress:
        return answers.pop(0)

    monkeypatch.setattr(backend, "progress", progress, raising=False)
    running = client.get("/ui/taxonomies/t/expansions/j-abcdef1234").text
    assert 'data-events="/ui/jobs/j-abcdef1234/events"' in running and "review?" not in running
    done = client.get("/ui/taxonomies/t/expansions/j-abcdef1234").text
    assert "data-events" not in done
    assert 'href="/ui/taxonomies/t/review?version=3"' in done


def test_an_expansion_of_another_taxonomy_is_not_found_here(
    client: TestClient, backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def progress(job_id: str, tenant: Tenant) -> pb.JobProgress:
        return _expansion(pb.JOB_STATE_RUNNING, "other")

    monkeypatch.setattr(backend, "progress", progress, raising=False)
    assert client.get("/ui/taxonomies/t/expansions/j-abcdef1234").status_code == 404
