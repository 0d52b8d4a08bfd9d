"""Gateway settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from taxoforge.settings import ProcessSettings

__all__ = ["GatewaySettings"]


class GatewaySettings(ProcessSettings):
    """HTTP listener and where the services' gRPC servers are."""

    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8080, ge=0, le=65535)
    taxonomy_addr: str = "127.0.0.1:50051"
    generator_addr: str = "127.0.0.1:50052"
    judge_addr: str = "127.0.0.1:50053"
    selector_addr: str = "127.0.0.1:50054"
    # Deadline of gateway-to-service calls.
    rpc_timeout_s: float = Field(default=15.0, gt=0)
    # Deadline of synchronous judging (model calls are slow).
    judge_timeout_s: float = Field(default=300.0, gt=0)
    # The largest file POST /v1/uploads and PUT /v1/benchmarks/{name} accept.
    max_upload_bytes: int = Field(default=20 << 30, gt=0)
    # Every other request body (recipes, taxonomy documents, judge batches), chunked or not.
    max_body_bytes: int = Field(default=16 << 20, gt=0)
    # "keys": every /v1 request needs an API key from the tenants file; "none": one implicit
    # tenant, for a gateway only its user can reach (the local stack, `taxoforge up`).
    auth: Literal["keys", "none"] = "keys"
    # The tenants, their hashed API keys, rate limits and job spend limits (YAML; see
    # `taxoforge keys new`). Re-read when it changes, so keys rotate without a restart.
    tenants_file: str | None = None
    # Origins a browser may call the API from (CORS); empty: no CORS headers at all.
    cors_origins: list[str] = Field(default_factory=list)
    # Where the web console keeps each finished job's records index (SQLite, rebuilt from the
    # job's files whenever missing); empty: a folder in the system's temporary directory.
    console_cache_dir: str = ""
