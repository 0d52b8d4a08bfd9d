"""Route dependencies: the process's Backend from app state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.backend import Backend

__all__ = ["BackendDep"]


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


BackendDep = Annotated[Backend, Depends(_backend)]
