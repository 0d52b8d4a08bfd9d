"""The model servers' HTTP/1.1 client against raw loopback servers that answer byte by byte as
a test needs: keep-alive, chunked and close-delimited bodies, compression, idle connections the
server dropped, and replies that break the protocol or its limits."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from taxoforge import eventloop
from taxoforge.llm.http1 import ConnectionPool, ProtocolError, ServerDisconnected

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter


@dataclass
class Server:
    """A loopback server; ``answer`` writes the reply to each request read."""

    answer: Callable[[Server, bytes, Writer], Awaitable[bool]]
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    heads: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    async def handle(self, reader: Reader, writer: Writer) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                self.heads.append(head)
                self.requests.append(body)
                if not await self.answer(self, body, writer):
                    return
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    servers: list[asyncio.Server] = []

    async def start(answer: Callable[[Server, bytes, Writer], Awaitable[bool]]) -> Server:
        server = Server(answer)
        srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        server.port = srv.sockets[0].getsockname()[1]
        servers.append(srv)
        return server

    yield start
    for srv in servers:
        srv.close()
        await srv.wait_closed()


def reply(body: bytes, status: int = 200, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


async def echo(server: Server, body: bytes, writer: Writer) -> bool:
    writer.write(reply(b'{"echo": ' + body + b"}"))
    await writer.drain()
    return True


async def test_requests_reuse_one_keep_alive_connection(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    server = await serve(echo)
    pool = ConnectionPool()
    for i in range(3):
        got = await pool.post(server.url, str(i).encode(), {"Authorization": "Bearer k"}, 5)
        assert (got.status, got.body) == (200, b'{"echo": %d}' % i)
    assert server.connections == 1
    head = server.heads[0]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in head
    assert b"Authorization: Bearer k\r\n" in head
    await pool.close()


async def test_concurrent_requests_each_get_their_own_reply(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def slow_echo(server: Server, body: bytes, writer: Writer) -> bool:
        await asyncio.sleep(0.01 * (int(body) % 3))
        return await echo(server, body, writer)

    server = await serve(slow_echo)
    pool = ConnectionPool()
    replies = await asyncio.gather(*(pool.post(server.url, b"%d" % i, {}, 5) for i in range(40)))
    assert [r.body for r in replies] == [b'{"echo": %d}' % i for i in range(40)]
    assert server.connections <= 40
    await pool.close()


async def test_a_chunked_reply_split_anywhere_is_reassembled(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def chunked(server: Server, body: bytes, writer: Writer) -> bool:
        raw = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
        for i in range(len(raw)):  # one byte per write: every split point
            writer.write(raw[i : i + 1])
            await writer.drain()
        return True

    server = await serve(chunked)
    pool = ConnectionPool()
    assert (await pool.post(server.url, b"{}", {}, 5)).body == b"hello world"
    assert (await pool.post(server.url, b"{}", {}, 5)).body == b"hello world"
    assert server.connections == 1  # the chunked reply left the connection reusable
    await pool.close()


async def test_a_reply_delimited_by_the_close_is_read_to_its_end(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def http10(server: Server, body: bytes, writer: Writer) -> bool:
        writer.write(b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{"a": ')
        await writer.drain()
        writer.write(b"1}")
        return False  # close

    server = await serve(http10)
    pool = ConnectionPool()
    assert (await pool.post(server.url, b"{}", {}, 5)).body == b'{"a": 1}'
    assert (await pool.post(server.url, b"{}", {}, 5)).body == b'{"a": 1}'
    assert server.connections == 2  # not kept: its end was the close
    await pool.close()


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as some servers send
    ],
)
async def test_compressed_replies_are_inflated(
    serve: Callable[..., Awaitable[Server]], encoding: str, pack: Callable[[bytes], bytes]
) -> None:
    text = b'{"choices": []}' * 50

    async def packed(server: Server, body: bytes, writer: Writer) -> bool:
        writer.write(reply(pack(text), extra=f"Content-Encoding: {encoding}\r\n"))
        return True

    server = await serve(packed)
    pool = ConnectionPool()
    assert (await pool.post(server.url, b"{}", {}, 5)).body == text
    await pool.close()


async def test_a_connection_the_server_dropped_while_idle_is_replaced(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def once_per_connection(server: Server, body: bytes, writer: Writer) -> bool:
        await echo(server, body, writer)
        return False  # close after one reply, without saying so in a header

    server = await serve(once_per_connection)
    pool = ConnectionPool()
    assert (await pool.post(server.url, b"1", {}, 5)).body == b'{"echo": 1}'
    await asyncio.sleep(0.05)  # the close has arrived: the idle connection is known dead
    assert (await pool.post(server.url, b"2", {}, 5)).body == b'{"echo": 2}'
    assert server.connections == 2
    await pool.close()


async def test_a_request_unanswered_on_a_reused_connection_is_written_once_more(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    dropped: list[bytes] = []

    async def drop_second(server: Server, body: bytes, writer: Writer) -> bool:
        if body == b"2" and not dropped:
            dropped.append(body)
            return False  # read, never answered: the server closed it (as at its idle limit)
        return await echo(server, body, writer)

    server = await serve(drop_second)
    pool = ConnectionPool()
    await pool.post(server.url, b"1", {}, 5)
    assert (await pool.post(server.url, b"2", {}, 5)).body == b'{"echo": 2}'
    assert server.requests == [b"1", b"2", b"2"]
    await pool.close()


async def test_a_reply_cut_off_midway_is_an_error_and_not_sent_again(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def cut(server: Server, body: bytes, writer: Writer) -> bool:
        writer.write(reply(b'{"long": "reply"}')[:-5])
        await writer.drain()
        return False

    server = await serve(cut)
    pool = ConnectionPool()
    with pytest.raises(ServerDisconnected) as err:
        await pool.post(server.url, b"{}", {}, 5)
    assert err.value.answered
    assert len(server.requests) == 1
    await pool.close()


async def test_replies_over_the_limits_are_refused(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def big(server: Server, body: bytes, writer: Writer) -> bool:
        kind = body.decode()
        if kind == "length":
            writer.write(reply(b"x" * 2000))
        elif kind == "chunks":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"400\r\n" + b"x" * 1024 + b"\r\n" + b"400\r\n" + b"y" * 1024 + b"\r\n")
        elif kind == "bomb":
            writer.write(reply(gzip.compress(b"0" * 100_000), extra="Content-Encoding: gzip\r\n"))
        else:
            writer.write(b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"p" * 70_000)
        await writer.drain()
        return True

    server = await serve(big)
    pool = ConnectionPool(max_body=1500)
    for kind in ("length", "chunks", "bomb", "head"):
        with pytest.raises(ProtocolError):
            await pool.post(server.url, kind.encode(), {}, 5)
    await pool.close()


async def test_bytes_that_are_not_http_are_a_protocol_error(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def garbage(server: Server, body: bytes, writer: Writer) -> bool:
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        return True

    server = await serve(garbage)
    with pytest.raises(ProtocolError, match="status line"):
        await ConnectionPool().post(server.url, b"{}", {}, 5)


async def test_an_interim_reply_is_skipped_and_a_redirect_is_not_followed(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def interim(server: Server, body: bytes, writer: Writer) -> bool:
        if body == b"redirect":
            writer.write(reply(b"", status=302, extra="Location: http://169.254.169.254/\r\n"))
        else:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + reply(b"{}"))
        return True

    server = await serve(interim)
    pool = ConnectionPool()
    assert (await pool.post(server.url, b"{}", {}, 5)).body == b"{}"
    assert (await pool.post(server.url, b"redirect", {}, 5)).status == 302
    assert len(server.requests) == 2  # nothing went to the Location
    await pool.close()


async def test_a_slow_reply_times_out_and_its_connection_is_not_reused(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def stall_first(server: Server, body: bytes, writer: Writer) -> bool:
        if body == b"slow":
            await asyncio.sleep(0.5)
        return await echo(server, body, writer)

    server = await serve(stall_first)
    pool = ConnectionPool()
    with pytest.raises(TimeoutError):
        await pool.post(server.url, b"slow", {}, 0.1)
    assert (await pool.post(server.url, b"1", {}, 5)).body == b'{"echo": 1}'
    assert server.connections == 2
    await pool.close()


async def test_headers_and_urls_cannot_smuggle_lines(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    server = await serve(echo)
    pool = ConnectionPool()
    with pytest.raises(ValueError):
        await pool.post(server.url, b"{}", {"Authorization": "Bearer k\r\nX-Evil: 1"}, 5)
    with pytest.raises(ValueError):
        await pool.post(server.url + "\r\nX-Evil: 1", b"{}", {}, 5)
    with pytest.raises(ValueError):
        await pool.post("ftp://127.0.0.1/x", b"{}", {}, 5)
    assert server.requests == []
    await pool.close()


async def test_a_reply_that_says_close_ends_its_connection(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def says_close(server: Server, body: bytes, writer: Writer) -> bool:
        writer.write(reply(b"{}", extra="Connection: close\r\n"))
        return True  # the socket stays open: only the header says it is done

    server = await serve(says_close)
    pool = ConnectionPool()
    await pool.post(server.url, b"1", {}, 5)
    await pool.post(server.url, b"2", {}, 5)
    assert server.connections == 2
    await pool.close()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_the_client_works_on_each_event_loop_a_service_can_run(loop: str) -> None:
    # The services run on uvloop by default, whose transports are not asyncio's classes.
    async def main() -> tuple[list[bytes], int]:
        server = Server(echo)
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        server.port = listener.sockets[0].getsockname()[1]
        pool = ConnectionPool()
        try:
            replies = await asyncio.gather(
                *(pool.post(server.url, b"%d" % i, {}, 5) for i in range(20))
            )
            replies.append(await pool.post(server.url, b"20", {}, 5))  # a kept connection
        finally:
            await pool.close()
            listener.close()
            await listener.wait_closed()
        return [r.body for r in replies], server.connections

    bodies, connections = eventloop.run(main(), loop)

    assert bodies == [b'{"echo": %d}' % i for i in range(21)]
    assert connections <= 20
