"""Which network addresses a request made on a tenant's behalf may reach: public ones only.

One policy for every place a tenant's text becomes an outbound connection (today: URL imports).
A host is checked where the connection is made: a literal address in the URL before the request,
a name through :class:`PublicResolver` (aiohttp connects to the address it returns, so a name
that resolves differently a second time cannot lead inside), and every redirect hop again.

Python's ``ipaddress`` is not enough alone: in 3.11 it calls IPv4-compatible (``::127.0.0.1``)
and NAT64 (``64:ff9b::7f00:1``) addresses global, and multicast too. Addresses that carry an
IPv4 address (IPv4-mapped, 6to4, NAT64) are judged by that address; the deprecated
IPv4-compatible form, Teredo and local-use NAT64 have no public use and are refused outright.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

import aiohttp
import yarl
from aiohttp.abc import ResolveResult

from taxoforge.errors import PermanentError

__all__ = [
    "PrivateAddressError",
    "PublicResolver",
    "check_url",
    "get_following_redirects",
    "is_public_address",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: local use only
_TEREDO = ipaddress.IPv6Network("2001::/32")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class PrivateAddressError(PermanentError):
    """A request would have gone to an address that is not public."""


def _plainly_public(address: IPAddress) -> bool:
    return address.is_global and not (
        address.is_multicast
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
    )


def is_public_address(address: str | IPAddress) -> bool:
    """Whether ``address`` is a public unicast address, including the IPv4 address it embeds."""
    try:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        return _plainly_public(ip)
    if ip.scope_id:  # fe80::1%eth0 and the like: an interface of this machine's
        return False
    if ip in _TEREDO or ip in _LOCAL_NAT64 or ip in _IPV4_COMPATIBLE:
        return False  # no public use; ::/96 also holds :: and ::1
    embedded = ip.ipv4_mapped or ip.sixtofour
    if embedded is None and ip in _NAT64:
        embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if embedded is not None:
        return _plainly_public(embedded)
    return _plainly_public(ip)


def _refusal(what: str, why: str, hint: str) -> str:
    text = f"{what}: {why}" if why else what
    return f"{text}; {hint}" if hint else text


def check_url(url: str, hint: str = "") -> None:
    """Refuse a URL whose host is a literal address that is not public (no resolver sees those).

    Raises:
        PrivateAddressError: the host is such an address; ``hint`` says how to allow it.
    """
    host = yarl.URL(url).raw_host or ""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return  # a name: PublicResolver judges what it resolves to
    if not is_public_address(address):
        raise PrivateAddressError(_refusal(url, f"{host} is a private address", hint))


class PublicResolver(aiohttp.ThreadedResolver):
    """A resolver that gives only public addresses, so a name cannot lead inside."""

    def __init__(self, hint: str = "") -> None:
        super().__init__()
        self._hint = hint

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await super().resolve(host, port, family)
        public = [r for r in found if is_public_address(r["host"])]
        if not public:
            raise OSError(  # aiohttp shows an OSError's strerror in its connection error
                errno.EACCES, _refusal(f"{host} has only private addresses", "", self._hint)
            )
        return public


async def get_following_redirects(
    session: aiohttp.ClientSession, url: str, guard: bool, hops: int = 5, hint: str = ""
) -> aiohttp.ClientResponse:
    """GET ``url``, following redirects by hand so every hop is checked like the first.

    With ``guard`` the session must use :class:`PublicResolver`; this checks literal hosts.
    """
    for _ in range(hops + 1):
        if guard:
            check_url(url, hint)
        resp = await session.get(url, allow_redirects=False)
        if resp.status not in _REDIRECTS or "Location" not in resp.headers:
            return resp
        url = str(resp.url.join(yarl.URL(resp.headers["Location"])))
        resp.release()
    raise PermanentError(f"{url}: more than {hops} redirects")
