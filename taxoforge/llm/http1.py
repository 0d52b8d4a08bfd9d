"""A small HTTP/1.1 client for model servers: JSON POSTs over pooled keep-alive connections.

aiohttp spent about 0.2 ms of CPU per model call (request and response objects, header
multidicts, timers, tracing hooks, its connector's bookkeeping); with hundreds of calls in
flight to one local server, that was a third of the selector's CPU in the tag step. A model
call needs much less: write one request, read a status and a body. This client does that on
plain asyncio protocols at about a third of the cost (``benchmarks/pipeline_bench.py`` prints
both side by side).

What it speaks: ``http`` and ``https`` (the system's CA store, SNI), one request at a time per
connection, bodies delimited by Content-Length, chunked encoding or the connection's close,
gzip and deflate decoded. No redirects are followed (a 3xx is the caller's to report), no
proxy is read from the environment, and every reply is bounded (head and body), since a
model server's bytes are as untrusted as a model's text.

A connection the server closed while it sat idle is found out when the request written on it
gets nothing back; such a request, and only such a one, is written once more on a new
connection (nothing was read, so the server cannot have answered it).
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

__all__ = [
    "ConnectionPool",
    "HTTPClientError",
    "ProtocolError",
    "Reply",
    "ServerDisconnected",
]

_MAX_HEAD = 64 * 1024
_DEFAULT_MAX_BODY = 64 * 1024 * 1024
_CONTROL = frozenset("\r\n\0")


class HTTPClientError(Exception):
    """The request got no usable reply: no connection, a dropped one, or bytes that are not
    HTTP/1.1."""


class ServerDisconnected(HTTPClientError):
    """The server closed the connection before its reply was complete."""

    def __init__(self, message: str, answered: bool) -> None:
        super().__init__(message)
        # Whether any byte of the reply came: if not, the request may be written again.
        self.answered = answered


class ProtocolError(HTTPClientError):
    """The reply broke HTTP/1.1 or a limit (head or body too large, an unknown encoding)."""


@dataclass(frozen=True)
class Reply:
    """A status and the decoded body."""

    status: int
    body: bytes


@dataclass(frozen=True)
class _Target:
    """Where a URL leads, parsed once."""

    host: str
    port: int
    tls: bool
    head: bytes  # the request line and the fixed headers, up to Content-Length's value

    @property
    def server(self) -> tuple[str, int, bool]:
        """What a connection is to: requests to any path of it share the connections."""
        return self.host, self.port, self.tls


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes a request, parses its reply as bytes arrive."""

    def __init__(self, max_body: int) -> None:
        self._max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._reply: asyncio.Future[Reply] | None = None
        self._buf = bytearray()
        self._received = False
        self._reset()

    def _reset(self) -> None:
        self._in_head = True
        self._status = 0
        self._keep_alive = True
        self._encoding = b""
        self._length = -1  # the body's Content-Length; -1: chunked or until close
        self._chunked = False
        self._chunk_left = -1  # bytes left of the current chunk (with its CRLF); -1: a size
        self._trailers = False
        self._body = bytearray()

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not always a subclass of asyncio.Transport (uvloop's).
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        reply = self._reply
        if reply is None or reply.done():
            return
        if not self._in_head and self._length < 0 and not self._chunked:
            self._finish()  # a body delimited by the close: this is its end
            return
        reply.set_exception(
            ServerDisconnected(
                "the server closed the connection before its reply was complete",
                answered=self._received,
            )
        )

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def data_received(self, data: bytes) -> None:
        if self._reply is None or self._reply.done():
            self.abort()  # bytes nobody asked for: the connection cannot be trusted
            return
        self._received = True
        self._buf += data
        try:
            self._parse()
        except ProtocolError as exc:
            self._reply.set_exception(exc)
            self.abort()

    # -- requests --

    async def request(self, data: bytes) -> Reply:
        """Write one request and wait for its whole reply."""
        assert self.transport is not None
        if self.closed:
            raise ServerDisconnected("the connection was closed before the request", False)
        self._reply = asyncio.get_running_loop().create_future()
        self._received = False
        self._buf.clear()
        self._reset()
        self.transport.write(data)
        return await self._reply

    @property
    def reusable(self) -> bool:
        """Whether the last reply left the connection fit for another request."""
        return not self.closed and self._keep_alive and not self._buf

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- parsing --

    def _parse(self) -> None:
        if self._in_head and not self._parse_head():
            return
        if self._chunked:
            self._parse_chunks()
            return
        if self._length >= 0:
            if len(self._buf) >= self._length:
                self._body += self._buf[: self._length]
                del self._buf[: self._length]
                self._finish()
            return
        if len(self._buf) + len(self._body) > self._max_body:
            raise ProtocolError(f"reply body over {self._max_body} bytes")
        self._body += self._buf  # until the close
        self._buf.clear()

    def _parse_head(self) -> bool:
        """Parse the status line and headers once they are all here; False: wait for more."""
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > _MAX_HEAD:
                raise ProtocolError(f"reply head over {_MAX_HEAD} bytes")
            return False
        lines = bytes(self._buf[:end]).split(b"\r\n")
        del self._buf[: end + 4]
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[1].isdigit():
            raise ProtocolError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
        status = int(parts[1])
        if 100 <= status < 200:  # an interim reply (we never ask for one): the real one follows
            if status == 101:
                raise ProtocolError("the server switched protocols")
            return self._parse_head() if self._buf else False
        connection = b""
        length: int | None = None
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise ProtocolError(f"malformed header line: {line[:80]!r}")
            name = name.strip().lower()
            value = value.strip()
            if name == b"content-length":
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise ProtocolError(f"bad Content-Length: {value[:40]!r}")
                length = int(value)
            elif name == b"transfer-encoding":
                self._chunked = value.lower().endswith(b"chunked")
            elif name == b"connection":
                connection = value.lower()
            elif name == b"content-encoding":
                self._encoding = value.lower()
        self._in_head = False
        self._status = status
        if parts[0] == b"HTTP/1.0":
            self._keep_alive = b"keep-alive" in connection
        else:
            self._keep_alive = b"close" not in connection
        if status in (204, 304):
            length = 0
        if self._chunked:
            length = None
        if length is not None:
            if length > self._max_body:
                raise ProtocolError(f"reply body of {length} bytes, over {self._max_body}")
            self._length = length
        elif not self._chunked:
            self._keep_alive = False  # the body ends with the connection
        return True

    def _parse_chunks(self) -> None:
        buf = self._buf
        while True:
            if self._trailers:  # after the last chunk: trailer lines up to an empty one
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                del buf[: end + 2]
                if end == 0:
                    self._finish()
                    return
                continue
            if self._chunk_left < 0:  # a size line
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 1024:
                        raise ProtocolError("chunk size line too long")
                    return
                size_text = bytes(buf[:end]).split(b";", 1)[0].strip()
                del buf[: end + 2]
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size: {size_text[:20]!r}") from None
                if size < 0 or len(self._body) + size > self._max_body:
                    raise ProtocolError(f"reply body over {self._max_body} bytes")
                if size == 0:
                    self._trailers = True
                    continue
                self._chunk_left = size + 2
            if len(buf) < self._chunk_left:
                return
            size = self._chunk_left - 2
            if buf[size : size + 2] != b"\r\n":
                raise ProtocolError("a chunk did not end with CRLF")
            self._body += buf[:size]
            del buf[: self._chunk_left]
            self._chunk_left = -1

    def _finish(self) -> None:
        reply = self._reply
        assert reply is not None
        try:
            body = _decode(bytes(self._body), self._encoding, self._max_body)
        except ProtocolError as exc:
            reply.set_exception(exc)
            self.abort()
            return
        reply.set_result(Reply(self._status, body))
        self._body = bytearray()


def _decode(body: bytes, encoding: bytes, limit: int) -> bytes:
    """The body under its Content-Encoding (identity, gzip or deflate), at most ``limit``
    bytes once inflated."""
    if encoding in (b"", b"identity"):
        return body
    if encoding in (b"gzip", b"x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == b"deflate":
        wbits = zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS  # zlib or raw
    else:
        raise ProtocolError(f"unsupported Content-Encoding {encoding[:40]!r}")
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        name = encoding.decode("ascii", "replace")
        raise ProtocolError(f"a {name} body that does not inflate") from exc
    if len(out) > limit:
        raise ProtocolError(f"reply body over {limit} bytes once inflated")
    return out


class ConnectionPool:
    """Keep-alive connections per server, shared by every request of a process.

    Idle connections are reused newest first; one idle longer than ``keepalive_s`` is closed
    instead (servers drop idle connections after a while too). At most ``max_idle`` are kept
    per server; concurrency is the caller's to bound.
    """

    def __init__(
        self,
        keepalive_s: float = 30.0,
        max_idle: int = 1024,
        max_body: int = _DEFAULT_MAX_BODY,
        user_agent: str = "taxoforge",
    ) -> None:
        self._keepalive_s = keepalive_s
        self._max_idle = max_idle
        self._max_body = max_body
        self._user_agent = user_agent
        self._idle: dict[tuple[str, int, bool], list[_Connection]] = {}
        self._targets: dict[str, _Target] = {}
        self._tls: ssl.SSLContext | None = None

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> Reply:
        """POST ``body`` (JSON) to ``url``; the reply, whatever its status.

        Raises:
            TimeoutError: no whole reply within ``timeout_s`` (connecting included).
            HTTPClientError: no connection, or no usable reply on it.
            ValueError: a URL or header that cannot be sent as is.
        """
        target = self._target(url)
        extra = "".join(f"{name}: {_header_value(value)}\r\n" for name, value in headers.items())
        data = b"".join(
            (target.head, str(len(body)).encode(), b"\r\n", extra.encode("latin-1"), b"\r\n", body)
        )
        async with asyncio.timeout(timeout_s):
            conn = self._take(target)
            if conn is not None:
                try:
                    return await self._send(target, conn, data)
                except ServerDisconnected as exc:
                    if exc.answered:
                        raise
                    # The server had closed it while idle: nothing was read, so write it again.
            return await self._send(target, await self._connect(target), data)

    async def close(self) -> None:
        """Close every idle connection; the pool may still be used afterwards."""
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    async def _send(self, target: _Target, conn: _Connection, data: bytes) -> Reply:
        done = False
        try:
            reply = await conn.request(data)
            done = True
            return reply
        finally:
            if done and conn.reusable:
                self._give_back(target, conn)
            elif done:
                conn.close()
            else:  # cancelled, timed out or failed mid-reply: the connection's state is unknown
                conn.abort()

    def _take(self, target: _Target) -> _Connection | None:
        conns = self._idle.get(target.server)
        now = time.monotonic()
        while conns:
            conn = conns.pop()
            if not conn.closed and now - conn.idle_since < self._keepalive_s:
                return conn
            conn.close()
        return None

    def _give_back(self, target: _Target, conn: _Connection) -> None:
        conns = self._idle.setdefault(target.server, [])
        if len(conns) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        conns.append(conn)

    async def _connect(self, target: _Target) -> _Connection:
        loop = asyncio.get_running_loop()
        max_body = self._max_body
        try:
            if target.tls:
                _, conn = await loop.create_connection(
                    lambda: _Connection(max_body),
                    target.host,
                    target.port,
                    ssl=self._tls_context(),
                    server_hostname=target.host,
                )
            else:
                _, conn = await loop.create_connection(
                    lambda: _Connection(max_body), target.host, target.port
                )
        except OSError as exc:  # refused, unreachable, no such name, a TLS failure
            where = f"{target.host}:{target.port}"
            raise HTTPClientError(f"could not connect to {where}: {exc}") from exc
        return conn

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) > 256:
                self._targets.clear()
            target = self._targets[url] = _parse_target(url, self._user_agent)
        return target


def _parse_target(url: str, user_agent: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    if any(ch in _CONTROL or ch == " " for ch in url):
        raise ValueError(f"a URL with spaces or control characters: {url!r}")
    tls = parts.scheme == "https"
    default = 443 if tls else 80
    port = parts.port or default
    host = parts.hostname
    ascii_host = host if host.isascii() else host.encode("idna").decode("ascii")
    shown = f"[{ascii_host}]" if ":" in ascii_host else ascii_host
    if port != default:
        shown = f"{shown}:{port}"
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {shown}\r\n"
        f"User-Agent: {user_agent}\r\n"
        "Accept: application/json\r\n"
        "Accept-Encoding: gzip, deflate\r\n"
        "Content-Type: application/json\r\n"
        "Content-Length: "
    ).encode("ascii")
    return _Target(host, port, tls, head)


def _header_value(value: str) -> str:
    if any(ch in _CONTROL for ch in value):
        raise ValueError("a header value with a line break or NUL")
    return value
