"""nats-py's request inboxes take their last characters from the bus's cheap generator."""

from __future__ import annotations

import nats.aio.client
import nats.js.client

from taxoforge.bus import connection


def test_request_inbox_tokens_come_without_a_system_call() -> None:
    assert nats.aio.client.token_hex is connection._token_hex
    assert nats.js.client.token_hex is connection._token_hex
    tokens = {connection._token_hex(2) for _ in range(2000)}
    assert all(len(t) == 4 and int(t, 16) >= 0 for t in tokens)
    assert len(tokens) > 1000  # drawn, not fixed
