"""Shared guards for the unit suite: no network, no settings leaking in from the environment."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unit tests must not use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(autouse=True)
def _clean_taxoforge_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("TAXOFORGE_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def no_installed_model_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The files ``taxoforge models`` made at install are not there (an empty folder stands
    for them), so a test of how they are made and cached sees only its own cache directory."""
    from taxoforge import model_cache

    empty = tmp_path_factory.mktemp("installed-models")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model_cache, "installed_dir", lambda: empty)
        yield
