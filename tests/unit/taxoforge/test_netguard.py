"""The address guard for requests made on a tenant's behalf, called directly (no traffic)."""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
import pytest

from taxoforge.netguard import PrivateAddressError, PublicResolver, check_url, is_public_address

REFUSED = [
    "127.0.0.1",  # loopback
    "127.1.2.3",
    "10.1.2.3",  # private
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # link-local: cloud metadata
    "100.64.0.1",  # shared (carrier-grade NAT)
    "0.0.0.0",
    "224.0.0.1",  # multicast, which 3.11 calls global
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",  # link-local
    "fe80::1%eth0",
    "fc00::1",  # unique-local
    "fd12:3456::1",
    "ff02::1",  # multicast
    "::127.0.0.1",  # IPv4-compatible: 3.11 calls it global
    "::10.0.0.1",
    "::8.8.8.8",  # IPv4-compatible is deprecated: refused whatever it holds
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1: 3.11 calls it global
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::808:808",  # local-use NAT64
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a00:1::",  # 6to4 of 10.0.0.1
    "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "2001:0:7f00:1:8000:63bf:80ff:fffe",  # Teredo with a loopback server
    "not an address",
]

ACCEPTED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",  # mapped public IPv4
    "64:ff9b::808:808",  # NAT64 of a public address: how IPv6-only hosts reach IPv4
    "2002:808:808::1",  # 6to4 of a public address
]


@pytest.mark.parametrize("address", REFUSED)
def test_private_addresses_and_those_embedding_one_are_refused(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize("address", ACCEPTED)
def test_public_addresses_are_accepted(address: str) -> None:
    assert is_public_address(address)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9999/v1",
        "http://[::1]/x",
        "http://[::127.0.0.1]:8081/v1",
        "http://[64:ff9b::7f00:1]/data.jsonl",
        "http://[::ffff:10.0.0.1]/",
        "https://[2002:a9fe:a9fe::]/latest/meta-data",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
def test_a_url_with_a_private_literal_host_is_refused_with_the_hint(url: str) -> None:
    with pytest.raises(PrivateAddressError, match="is a private address; turn it on"):
        check_url(url, hint="turn it on")


@pytest.mark.parametrize(
    "url", ["https://example.org/data.jsonl", "http://8.8.8.8/x", "http://[2606:4700::1]/"]
)
def test_a_url_with_a_public_or_named_host_passes(url: str) -> None:
    check_url(url)  # names are left to the resolver


async def test_the_resolver_keeps_only_public_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = {
        "mixed.example": ["10.0.0.7", "8.8.8.8", "::ffff:127.0.0.1"],
        "inside.example": ["127.0.0.1", "64:ff9b::a00:1", "::127.0.0.1"],
    }

    async def resolve(
        self: Any, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[dict[str, Any]]:
        return [{"host": a, "port": port, "hostname": host} for a in answers[host]]

    monkeypatch.setattr(aiohttp.ThreadedResolver, "resolve", resolve)
    resolver = PublicResolver("ask the operator")

    found = await resolver.resolve("mixed.example", 443)
    assert [r["host"] for r in found] == ["8.8.8.8"]
    with pytest.raises(OSError, match="has only private addresses; ask the operator"):
        await resolver.resolve("inside.example", 443)
