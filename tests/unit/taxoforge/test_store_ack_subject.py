"""A delivery's stream and consumer sequences read from its ack subject, against nats-py's
full parse."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg

from taxoforge.store import _sequences


@pytest.mark.parametrize(
    "reply",
    [
        # v1: $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns>.<pending>
        "$JS.ACK.KV_items.ord1.1.5071.42.1765100000000000000.17",
        "$JS.ACK.KV_items.ord1.3.9.1.1765100000000000000.0",
        # v2: with a domain and an account hash (and the trailing random token)
        "$JS.ACK.hub.ACCHASH.KV_items.ord1.1.5071.42.1765100000000000000.17.abc",
        "$JS.ACK._.ACCHASH.KV_items.ord1.2.77.1234.1765100000000000000.0.xyz",
    ],
)
def test_the_sequences_are_the_ones_nats_py_parses(reply: str) -> None:
    msg = Msg(_client=None, subject="$KV.items.k", reply=reply, data=b"")  # type: ignore[arg-type]
    expected = Msg(_client=None, subject="$KV.items.k", reply=reply, data=b"")  # type: ignore[arg-type]
    stream, consumer = _sequences(msg)
    assert consumer == expected.metadata.sequence.consumer
    assert stream == expected.metadata.sequence.stream
