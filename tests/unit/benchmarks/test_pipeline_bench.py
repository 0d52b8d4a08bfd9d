"""The pipeline benchmark's check of a finished job: every planned item exported or dropped,
and only once (a redrawn or retried call is no error; a lost or doubled item is)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))

from pipeline_bench import account_items

JOB = {"id": "job1", "planned": 4}


def _line(item: str) -> dict[str, str]:
    # "a.draft0": a draft of item a the gates turned down (a line of its own in dropped.jsonl).
    item_id, _, draft = item.partition(".")
    line = {"id": f"job1/{item_id}", "item_id": item_id}
    return {**line, "candidate": item, "reason": "rejected_candidate"} if draft else line


def _api(files: dict[str, list[str]]) -> httpx.Client:
    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/v1/jobs/job1/files/")
        if path not in files:
            return httpx.Response(404)
        return httpx.Response(200, text="".join(json.dumps(_line(i)) + "\n" for i in files[path]))

    return httpx.Client(base_url="http://gateway", transport=httpx.MockTransport(answer))


def test_every_item_exported_or_dropped_once_is_ok() -> None:
    api = _api({"meta/provenance.jsonl": ["a", "b", "c"], "meta/dropped.jsonl": ["d"]})

    account = account_items(api, JOB)

    assert account.ok
    assert (account.exported, account.dropped, account.lost) == (3, 1, 0)


def test_a_turned_down_draft_of_an_exported_item_is_not_the_items_end() -> None:
    api = _api({"meta/provenance.jsonl": ["a", "b", "c", "d"], "meta/dropped.jsonl": ["b.draft0"]})

    account = account_items(api, JOB)

    assert account.ok
    assert (account.exported, account.dropped) == (4, 0)


def test_a_job_with_nothing_dropped_has_no_dropped_file() -> None:
    api = _api({"meta/provenance.jsonl": ["a", "b", "c", "d"]})

    assert account_items(api, JOB).ok


def test_an_item_in_neither_file_is_lost() -> None:
    api = _api({"meta/provenance.jsonl": ["a", "b"], "meta/dropped.jsonl": ["d"]})

    account = account_items(api, JOB)

    assert not account.ok
    assert account.lost == 1


def test_an_item_exported_twice_or_also_dropped_is_a_duplicate() -> None:
    api = _api({"meta/provenance.jsonl": ["a", "b", "b", "c"], "meta/dropped.jsonl": ["c", "d"]})

    account = account_items(api, JOB)

    assert not account.ok
    assert account.duplicated == ["b", "c"]


def test_nats_messages_are_summed_by_connection_name() -> None:
    from common import messages_by_connection

    connz = {
        "connections": [
            {"name": "taxoforge-generator", "in_msgs": 10, "out_msgs": 7},
            {"name": "taxoforge-generator", "in_msgs": 5, "out_msgs": 1},  # a second replica
            {"name": "taxoforge-judge", "in_msgs": 3, "out_msgs": 4},
            {"in_msgs": 1, "out_msgs": 2},  # a client that gave no name
        ]
    }
    assert messages_by_connection(connz) == {
        "taxoforge-generator": (15, 8),
        "taxoforge-judge": (3, 4),
        "?": (1, 2),
    }
    assert messages_by_connection({"connections": None}) == {}
