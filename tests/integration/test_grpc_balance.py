"""The gateway's synchronous calls spread over every replica of a service, as a cluster's
headless Service lists them all (scaling the judge out helps /v1/judge too)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from taxoforge_cli.stack import Stack, StackConfig

from .conftest import FAST_RETRIES

pytestmark = pytest.mark.integration


def _judge_batches(log: Path) -> int:
    count = 0
    for line in log.read_text().splitlines():
        if '"rpc"' in line:
            event = json.loads(line)
            count += event.get("event") == "rpc" and event["method"].endswith("/JudgeBatch")
    return count


def test_synchronous_judging_reaches_every_judge_replica(tmp_path: Path) -> None:
    config = StackConfig(
        data_dir=tmp_path / "stack", llm="fake", sync_always=False, env=dict(FAST_RETRIES)
    )
    with Stack(config) as stack:
        stack.add_replica("judge")
        stack.restart_gateway()
        body = {"instruction": "Name a prime.", "responses": [{"text": "7."}, {"text": "9."}]}
        with httpx.Client(base_url=stack.gateway_url, timeout=60) as api:
            for _ in range(10):
                resp = api.post("/v1/judge", json=body)
                assert resp.status_code == 200, resp.text
        served = [_judge_batches(stack.log_dir / f"{name}.log") for name in ("judge", "judge-2")]
    assert sum(served) == 10
    assert min(served) >= 3, f"calls per replica: {served}"
