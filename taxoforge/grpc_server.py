"""gRPC aio server bootstrap: health, reflection, access log and error mapping in one place."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from taxoforge.errors import ConflictError, NotFoundError, PermanentError, TransientError

__all__ = [
    "PROBE_SERVICES",
    "Context",
    "GrpcServer",
    "client_channel",
    "error_from_rpc",
    "is_serving",
    "start_grpc_server",
    "status_for",
]

log = structlog.get_logger(__name__)

# Kubernetes' native gRPC probes ask for these names (design §4).
PROBE_SERVICES = ("liveness", "readiness")
_MAX_MESSAGE = 32 * 1024 * 1024
_MAX_CONNECTION_AGE_MS = 60_000
_CONNECTION_AGE_GRACE_MS = 15 * 60_000


# Our errors and the status that carries each between processes, most specific first.
_ERROR_STATUS: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (ConflictError, grpc.StatusCode.FAILED_PRECONDITION),
    (PermanentError, grpc.StatusCode.INVALID_ARGUMENT),
    (TransientError, grpc.StatusCode.UNAVAILABLE),
)
# Worth a retry, as UNAVAILABLE is: gRPC's own deadline and a server shedding load.
_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


def status_for(exc: Exception) -> grpc.StatusCode | None:
    """The status a servicer answers with for one of our errors (None: an internal error)."""
    for error, code in _ERROR_STATUS:
        if isinstance(exc, error):
            return code
    return None


def error_from_rpc(exc: grpc.aio.AioRpcError, what: str) -> Exception:
    """The error a client raises for a failed call to ``what`` (e.g. "the judge service")."""
    code = exc.code()
    detail = exc.details() or code.name
    if code in _RETRYABLE:
        return TransientError(f"{what} is unavailable ({code.name}): {detail}")
    for error, status in _ERROR_STATUS:
        if status == code:
            return error(detail)
    return RuntimeError(f"{what} failed ({code.name}): {detail}")


def client_channel(target: str) -> grpc.aio.Channel:
    """A channel to a service that spreads calls over every address its name resolves to.

    On a cluster the services' names are headless Services (one address per ready pod), so
    the gateway's synchronous calls reach every judge replica, not the one a ClusterIP
    connection happened to land on. ``target`` is "host:port" (looked up through DNS), or any
    gRPC target such as "ipv4:10.0.0.1:50051,10.0.0.2:50051".
    """
    if ":///" not in target and not target.startswith(("ipv4:", "ipv6:", "unix:")):
        target = f"dns:///{target}"
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.max_receive_message_length", _MAX_MESSAGE),
            ("grpc.max_send_message_length", _MAX_MESSAGE),
        ],
    )


# What servicer methods receive; the request and response types are on the method itself.
Context = grpc.aio.ServicerContext[Any, Any]


async def is_serving(
    channel: grpc.aio.Channel,
    service: str = "readiness",
    timeout: float = 2.0,  # noqa: ASYNC109 - a gRPC deadline, passed on to the call
) -> bool:
    """Whether the server behind ``channel`` reports ``service`` as SERVING."""
    stub: Any = health_pb2_grpc.HealthStub(channel)  # the stubs' types lack Check
    try:
        resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.aio.AioRpcError:
        return False
    return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


class _ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Logs every call with its status and latency, and turns our errors into status codes.

    Servicers raise NotFoundError, PermanentError (bad input) or TransientError like any other
    code does; clients see NOT_FOUND, INVALID_ARGUMENT or UNAVAILABLE with the message.
    """

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = details.method

        async def _wrapped(request: Any, context: Context) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return await inner(request, context)  # type: ignore[arg-type]
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                mapped = status_for(exc)
                if mapped is not None:
                    code = mapped
                    await context.abort(code, str(exc))
                code = grpc.StatusCode.INTERNAL
                log.error("rpc_failed", method=method, error=repr(exc), exc_info=exc)
                await context.abort(code, f"internal error: {type(exc).__name__}")
            finally:
                if not method.startswith("/grpc."):
                    log.info(
                        "rpc",
                        method=method,
                        code=code.name,
                        ms=round((time.perf_counter() - started) * 1000, 1),
                    )

        return grpc.unary_unary_rpc_method_handler(
            _wrapped,  # type: ignore[arg-type]  # an async behaviour, as grpc.aio accepts
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class GrpcServer:
    """A started server with its health servicer and the port it bound."""

    def __init__(self, server: grpc.aio.Server, health: HealthServicer, port: int) -> None:
        self.server = server
        self.health = health
        self.port = port

    async def set_ready(self, ready: bool) -> None:
        """Flip the readiness probe (NATS lost, draining, ...)."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set("readiness", status)

    async def stop(self, grace_s: float) -> None:
        """Report NOT_SERVING everywhere, then stop, letting running calls finish."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


async def start_grpc_server(
    host: str,
    port: int,
    register: Callable[[grpc.aio.Server], None],
    service_names: Iterable[str],
    reflection_on: bool = True,
) -> GrpcServer:
    """Create, register and start a server; every named service reports SERVING.

    Args:
        host: address to bind.
        port: port to bind; 0 picks a free one (see ``GrpcServer.port``).
        register: adds the service's servicers to the server.
        service_names: full names of those services, for health and reflection.
        reflection_on: serve gRPC reflection (handy in development, optional in production).
    """
    server = grpc.aio.server(
        interceptors=[_ServiceInterceptor()],
        options=[
            ("grpc.max_receive_message_length", _MAX_MESSAGE),
            ("grpc.max_send_message_length", _MAX_MESSAGE),
            # Clients reconnect now and then, and look the name up again when they do, so a
            # replica added by scaling out gets its share of calls; a call in flight at that
            # moment still has the grace to finish (the longest is a synchronous judging).
            ("grpc.max_connection_age_ms", _MAX_CONNECTION_AGE_MS),
            ("grpc.max_connection_age_grace_ms", _CONNECTION_AGE_GRACE_MS),
        ],
    )
    register(server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = list(service_names)
    if reflection_on:
        reflection.enable_server_reflection(
            [
                *names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    for name in ("", *names, *PROBE_SERVICES):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return GrpcServer(server, health, bound)
