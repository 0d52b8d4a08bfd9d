"""Gateway settings."""

from __future__ import annotations

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
