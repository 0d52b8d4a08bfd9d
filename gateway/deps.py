"""Route dependencies: the process's Backend, and the tenant a request comes from."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.backend import Backend
from gateway.tenants import LOCAL, RateLimiter, Tenant, TenantRegistry
from taxoforge.llm.endpoints import ModelRegistry

__all__ = [
    "ApiError",
    "Auth",
    "BackendDep",
    "IdempotencyKey",
    "Submission",
    "SubmissionDep",
    "TenantDep",
    "authenticated",
]


# A submission's Idempotency-Key header: a retry with the same key gets the job it created.
IdempotencyKey = Annotated[str | None, Header(max_length=200)]


class ApiError(Exception):
    """An HTTP error the app renders in its error shape (401, 413, 429)."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or {}


class Auth:
    """Who a request is (its API key's tenant) and whether it may be served now."""

    def __init__(self, registry: TenantRegistry | None) -> None:
        self._registry = registry
        self._limiter = RateLimiter()

    def tenant(self, key: str | None) -> Tenant:
        """The caller's tenant, counted against its rate limit.

        Raises:
            ApiError: 401 without a valid key, 429 over the rate limit.
        """
        if self._registry is None:
            return LOCAL
        tenant = self._registry.authenticate(key) if key else None
        if tenant is None:
            # The same answer for a missing and a wrong key, and the key is never logged.
            raise ApiError(
                401,
                "unauthorized",
                "a valid API key is required: send 'Authorization: Bearer <key>'",
                {"WWW-Authenticate": "Bearer"},
            )
        wait = self._limiter.wait_s(tenant)
        if wait > 0:
            raise ApiError(
                429,
                "rate_limited",
                f"tenant {tenant.name!r} is over its rate limit "
                f"({tenant.rate_limit.requests_per_s:g} requests/s); retry after {wait:.1f} s",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        return tenant


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


_bearer = HTTPBearer(auto_error=False, description="An API key: `taxoforge keys new`.")


def _tenant(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Tenant:
    auth: Auth = request.app.state.auth
    return auth.tenant(credentials.credentials if credentials else None)


BackendDep = Annotated[Backend, Depends(_backend)]
TenantDep = Annotated[Tenant, Depends(_tenant)]


@dataclass(frozen=True)
class Submission:
    """What every job submission route needs besides its spec: the backend, the tenant, the
    operator's models (names in the spec resolve there), the Idempotency-Key header and the
    response (a replayed submission answers 200, not 201)."""

    backend: Backend
    tenant: Tenant
    models: ModelRegistry
    key: str | None
    response: Response


def _submission(
    request: Request,
    response: Response,
    backend: BackendDep,
    tenant: TenantDep,
    idempotency_key: IdempotencyKey = None,
) -> Submission:
    return Submission(backend, tenant, request.app.state.models, idempotency_key, response)


SubmissionDep = Annotated[Submission, Depends(_submission)]
# For a router: every route under it needs a key (FastAPI resolves _tenant once per request).
authenticated = [Depends(_tenant)]
