"""The console's job and record templates render every part of a job, escaped."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.tenants import Tenant
from gateway.ui.jobs import _funnel, _histogram, _tokens, known_job_id
from gateway.ui.render import render
from gateway.views import job_view
from taxoforge.errors import NotFoundError
from taxoforge.v1 import common_pb2 as pb

EVIL = "<script>alert(1)</script>"


def _progress() -> pb.JobProgress:
    job = pb.Job(
        id="j-0123456789",
        recipe=pb.Recipe(name=EVIL, taxonomy_id="starter", count=4),
        state=pb.JOB_STATE_SUCCEEDED,
        planned=4,
        error="",
    )
    s = job.selection
    s.method = "tacos"
    s.judge.comparisons = 8
    s.judge.inconsistent = 2
    s.judge.swap_disagreement_rate = 0.25
    s.judge.histogram[3] = 2
    s.judge.histogram[8] = 6
    s.judge.golden_pairs = 3
    s.judge.golden_accuracy = 2 / 3
    s.composition.planned = 4
    cell = s.composition.cells.add(node_id="math", language="en", planned=2, sft=1)
    cell.reasons["gate:echo"] = 1
    s.composition.short = True
    job.datasets.add(kind="sft", format="jsonl", object_name="j-0123456789/data/sft.jsonl")
    job.datasets.add(kind="card", format="md", object_name="j-0123456789/README.md")
    out = pb.JobProgress(job=job, finished=4)
    out.stages.add(stage="instruct", done=3, failed=1)
    out.usage.prompt_tokens = 1000
    out.usage.completion_tokens = 234
    return out


def _page(template: str, **context: Any) -> str:
    app = FastAPI()

    @app.get("/")
    async def page(request: Request) -> Any:
        return render(request, template, **context)

    return TestClient(app).get("/").text


def test_the_job_page_shows_every_part_escaped() -> None:
    view = job_view(_progress())
    html = _page(
        "job.html",
        job=view,
        live=False,
        funnel=_funnel(view),
        histogram=_histogram(view.selection.judge.histogram if view.selection else {}),
        histogram_max=6,
        methods=[{"method": "tacos", "selected": 2, "mean_quality": 61.25}],
        method_columns=["method", "mean_quality", "selected"],
        tokens=_tokens(view),
        has_records=True,
        card=view.datasets[1],
    )
    assert EVIL not in html and "&lt;script&gt;" in html
    assert "2 of 8 comparisons changed with the order (25.0%)" in html
    assert "accuracy 66.7%" in html
    assert 'data-stage="instruct"' in html and "1,234" in html
    assert "gate:echo: 1" in html and "1 cell short" in html
    assert 'href="/ui/jobs/j-0123456789/files/data/sft.jsonl"' in html
    assert "61.250" in html


class _JobBackend:
    """The one Backend call the job page makes: the job's progress."""

    def __init__(self, progress: pb.JobProgress) -> None:
        self._progress = progress

    async def progress(self, job_id: str, tenant: Tenant) -> pb.JobProgress:
        return self._progress


def _job_page(progress: pb.JobProgress) -> str:
    """GET /ui/jobs/{id} through the console's own route, over an in-memory backend."""
    app = create_app(GatewaySettings(auth="none"))
    app.state.backend = _JobBackend(progress)  # no lifespan: nothing connects
    app.state.settings = GatewaySettings(auth="none")
    resp = TestClient(app).get(f"/ui/jobs/{progress.job.id}")
    assert resp.status_code == 200
    return resp.text


def test_the_job_page_says_how_many_went_untagged_and_why_escaped() -> None:
    progress = _progress()
    tacos = progress.job.selection.tacos
    tacos.tagged, tacos.tag_failures = 90, 10
    tacos.tag_failure_reasons.add(stage="tag", reason="no tags in the reply", items=6)
    tacos.tag_failure_reasons.add(stage="tag", reason=f"reply was {EVIL}", items=3)

    html = _job_page(progress)

    assert "10 of 100 candidates went untagged" in html
    assert "<li>tag: no tags in the reply: 6</li>" in html
    assert "<li>tag: reply was &lt;script&gt;alert(1)&lt;/script&gt;: 3</li>" in html
    # The report names the most common reasons only; the rest still add up.
    assert "<li>other reasons: 1</li>" in html
    assert EVIL not in html


def test_the_job_page_says_nothing_of_tagging_when_every_candidate_was_tagged() -> None:
    progress = _progress()
    progress.job.selection.tacos.tagged = 100

    html = _job_page(progress)

    assert "Selection</h2>" in html and "untagged" not in html


def test_the_funnel_and_histogram_have_no_gaps() -> None:
    view = job_view(_progress())
    assert _funnel(view) == [
        {"stage": "instruct", "planned": 4, "done": 3, "failed": 1, "waiting": 0}
    ]
    hist = _histogram({3: 2, 8: 6})
    assert hist[0] == (1, 0) and hist[-1] == (10, 0) and dict(hist)[8] == 6


def test_a_preference_record_shows_its_pair_and_both_orders() -> None:
    record = {
        "item_id": "i1",
        "status": "kept",
        "reason": "",
        "why": "best of its cluster",
        "margin": 4.5,
        "score": 80.0,
        "content": {
            "prompt": "Q?",
            "chosen": EVIL,
            "rejected": "meh",
            "score_chosen": 9.0,
            "score_rejected": 4.5,
        },
        "discarded": [{"stage": "gate", "reason": "echo"}],
    }
    verdicts = {
        "mode": "pairwise",
        "scores": [{"response_id": "r0", "score": 9.0, "rationale": "clear", "model": "m"}],
        "comparisons": [
            {
                "a_id": "r0",
                "b_id": "r1",
                "a_first": [9.0, 4.0],
                "b_first": [7.0, 6.0],
                "verdict": "a",
                "inconsistent": False,
            }
        ],
    }
    html = _page(
        "record.html",
        job_id="j-1",
        record=record,
        provenance={"node": "math", "metadata": {"strategy": "glan"}},
        metadata={"strategy": "glan", "instruction_template": "glan@3"},
        details={"strategy": "glan"},
        verdicts=verdicts,
        contrastive=[{"decision": "keep_strong", "version": 1, "gap": 0.4}],
        preference={"chosen_model": "big"},
        comparative=None,
        rubric_rounds=[{"round": 1, "action": "harder", "rubric": "add a constraint"}],
    )
    assert EVIL not in html
    assert 'margin <strong id="margin">4.5</strong>' in html
    assert 'data-order="a-first"' in html and 'data-order="b-first"' in html
    assert "r0: 9.0, r1: 4.0" in html and "r0: 7.0, r1: 6.0" in html
    assert "glan@3" in html and "keep_strong" in html and "add a constraint" in html
    assert "gate: echo" in html


def test_a_name_that_is_no_job_id_is_not_found() -> None:
    assert known_job_id("j-abcdef") == "j-abcdef"
    for name in ("new", "j-abc.*", "j-ABCDEF", "j-abcdef/x"):
        with pytest.raises(NotFoundError):
            known_job_id(name)
