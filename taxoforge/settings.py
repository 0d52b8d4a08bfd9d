"""Settings every process reads from the environment (prefix ``TAXOFORGE_``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["BusSettings", "LLMSettings", "ProcessSettings", "ServiceSettings"]


class BusSettings(BaseSettings):
    """How to reach NATS and how the JetStream topology is shaped."""

    model_config = SettingsConfigDict(env_prefix="TAXOFORGE_", extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_creds_file: str | None = None
    # TLS to NATS (a tls:// URL): the CA that signed the server's certificate, and for mutual
    # TLS this process's certificate and key. Files, so a cluster mounts them from a Secret.
    nats_tls_ca_file: str | None = None
    nats_tls_cert_file: str | None = None
    nats_tls_key_file: str | None = None
    # JetStream replicas for streams, KV and object store: 1 on a laptop, 3 on a cluster.
    replicas: int = Field(default=1, ge=1, le=5)
    # A redelivered publish within this window is dropped by Nats-Msg-Id.
    duplicate_window_s: float = Field(default=1200.0, gt=0)
    # How long the shared request cache keeps a reply.
    llm_cache_ttl_s: float = Field(default=30 * 24 * 3600.0, gt=0)


class LLMSettings(BaseSettings):
    """Defaults for model roles a recipe leaves open, and client limits."""

    model_config = SettingsConfigDict(env_prefix="TAXOFORGE_LLM_", extra="ignore")

    # The model named "default" (taxoforge/llm/endpoints.py): the one every role uses unless
    # the models file says otherwise. The key goes to this endpoint only.
    model: str = "openai/smollm2-135m-instruct"
    api_base: str | None = "http://127.0.0.1:8081/v1"
    api_key: SecretStr | None = None
    # YAML or JSON: more named models (address, key by env var or file, prices, limits) and
    # per-role defaults. Tenants choose among these names and never give an address.
    models_file: str | None = None
    # Calls in flight per model in one process, unless the models file says otherwise.
    max_concurrency: int = Field(default=64, ge=1)
    timeout_s: float = Field(default=600.0, gt=0)
    # Attempts per call on transient faults (connection errors, 429, 5xx).
    retries: int = Field(default=3, ge=0)
    # Attempts for a reply that is not valid JSON of the asked schema.
    structured_retries: int = Field(default=3, ge=1)
    # How models that do not say ask for JSON: auto, json_schema, json_object or none.
    response_format: str = Field(default="auto", pattern="^(auto|json_schema|json_object|none)$")
    # "auto": OpenAI-compatible endpoints over a direct HTTP client, others through litellm.
    transport: str = Field(default="auto", pattern="^(auto|litellm|http)$")


class ProcessSettings(BaseSettings):
    """What every taxoforge process reads: logging, NATS, model defaults."""

    model_config = SettingsConfigDict(env_prefix="TAXOFORGE_", extra="ignore")

    log_level: str = "info"
    # "auto" renders for a terminal when stderr is one, JSON otherwise.
    log_format: str = Field(default="auto", pattern="^(auto|json|console)$")
    # The asyncio event loop (taxoforge/eventloop.py): "auto" is uvloop (libuv's, in C; the
    # services make several socket reads and writes per model call) where it is installed,
    # "uvloop" insists on it, "asyncio" is the standard library's.
    event_loop: str = Field(default="auto", pattern="^(auto|uvloop|asyncio)$")
    bus: BusSettings = Field(default_factory=BusSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)


class ServiceSettings(ProcessSettings):
    """What every service process needs beyond that: gRPC and the worker loop."""

    grpc_host: str = "0.0.0.0"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    grpc_reflection: bool = True
    # Messages one process works on at once.
    worker_concurrency: int = Field(default=32, ge=1)
    # Unacked messages the consumer allows across all replicas; bounds what scaling out can add.
    max_ack_pending: int = Field(default=4096, ge=1)
    # Deliveries before a message goes to the dead-letter stream.
    max_deliver: int = Field(default=5, ge=1)
    # Redelivery after this long without an ack or an in_progress heartbeat.
    ack_wait_s: float = Field(default=60.0, gt=0)
    # Delay before a failed message is retried: base * 2**(delivery-1), capped.
    nak_delay_s: float = Field(default=2.0, ge=0)
    nak_delay_max_s: float = Field(default=60.0, ge=0)
    # On SIGTERM, in-flight work gets this long to finish before it is handed back.
    drain_timeout_s: float = Field(default=30.0, ge=0)
