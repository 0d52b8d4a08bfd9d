"""Helpers for driving jobs through a running stack's gateway."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from taxoforge.bus import Bus
from taxoforge.bus.topology import WORK_STREAM
from taxoforge.settings import BusSettings
from taxoforge.store import ItemKind, ItemStore

TERMINAL = {"succeeded", "failed", "cancelled"}


def submit(api: httpx.Client, **recipe: Any) -> dict[str, Any]:
    resp = api.post("/v1/jobs", json=recipe)
    assert resp.status_code == 201, resp.text
    job: dict[str, Any] = resp.json()
    return job


def wait(
    api: httpx.Client, job_id: str, limit_s: float = 90.0, until: set[str] = TERMINAL
) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    while True:
        resp = api.get(f"/v1/jobs/{job_id}")
        assert resp.status_code == 200, resp.text
        job: dict[str, Any] = resp.json()
        if job["state"] in until:
            return job
        assert time.monotonic() < deadline, f"job still {job['state']}: {job}"
        time.sleep(0.2)


def wait_for_stage(
    api: httpx.Client, job_id: str, stage: str, done: int, limit_s: float = 60.0
) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    while True:
        job: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()
        counts = {s["stage"]: s["done"] for s in job["stages"]}
        if counts[stage] >= done:
            return job
        assert time.monotonic() < deadline, f"{stage} stuck at {counts[stage]}: {job}"
        time.sleep(0.1)


def jsonl(api: httpx.Client, url: str) -> list[dict[str, Any]]:
    resp = api.get(url)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/jsonl")
    return [json.loads(line) for line in resp.text.splitlines() if line.strip()]


def records(api: httpx.Client, job_id: str, kind: str) -> list[dict[str, Any]]:
    """An export's records, each with its provenance (``provenance``) and the generation
    metadata in it (``metadata``) joined by id."""
    out = jsonl(api, f"/v1/jobs/{job_id}/datasets/{kind}")
    provenance = {p["id"]: p for p in jsonl(api, f"/v1/jobs/{job_id}/files/meta/provenance.jsonl")}
    for record in out:
        if "id" in record:
            record["provenance"] = provenance[record["id"]]
            record["metadata"] = provenance[record["id"]]["metadata"]
    return out


def stages(job: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {s["stage"]: (s["done"], s["failed"]) for s in job["stages"]}


async def _item_counts(nats_url: str, job_id: str) -> dict[str, int]:
    bus = await Bus.connect(BusSettings(nats_url=nats_url), name="test-counts")
    try:
        items = ItemStore(bus)
        return {kind.value: await items.count(job_id, kind) for kind in ItemKind}
    finally:
        await bus.close()


def item_counts(nats_url: str, job_id: str) -> dict[str, int]:
    """How many records of each kind a job has in the item store."""
    return asyncio.run(_item_counts(nats_url, job_id))


async def _queues_idle(nats_url: str, in_flight: int) -> bool:
    bus = await Bus.connect(BusSettings(nats_url=nats_url), name="test-idle")
    try:
        busy = 0
        for consumer in ("taxonomy", "generator", "judge", "selector"):
            info = await bus.js.consumer_info(WORK_STREAM, consumer)
            if info.num_pending:
                return False
            busy += info.num_ack_pending or 0
        return busy <= in_flight
    finally:
        await bus.close()


def delivered(nats_url: str, consumer: str) -> int:
    """Messages the work stream has delivered to a service's consumer so far (redeliveries
    included)."""

    async def _read() -> int:
        bus = await Bus.connect(BusSettings(nats_url=nats_url), name="test-delivered")
        try:
            info = await bus.js.consumer_info(WORK_STREAM, consumer)
            return int(info.delivered.consumer_seq or 0) if info.delivered else 0
        finally:
            await bus.close()

    return asyncio.run(_read())


def wait_queues_idle(nats_url: str, limit_s: float = 30.0, in_flight: int = 0) -> None:
    """Wait until nothing is queued and at most ``in_flight`` messages are being worked on."""
    deadline = time.monotonic() + limit_s
    while not asyncio.run(_queues_idle(nats_url, in_flight)):
        assert time.monotonic() < deadline, "work queues did not drain"
        time.sleep(0.1)
