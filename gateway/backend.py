"""What the gateway does behind its routes: jobs over NATS, taxonomies and selection over gRPC."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator

import grpc
import structlog

from gateway.settings import GatewaySettings
from taxoforge.bus import Bus, Stage
from taxoforge.datasets import DatasetStore, dataset_object
from taxoforge.errors import NotFoundError, PermanentError, TransientError
from taxoforge.grpc_server import is_serving
from taxoforge.pipeline import publish_work
from taxoforge.store import TERMINAL_STATES, JobStore, now_ms, state_name
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import taxonomy_pb2 as tpb
from taxoforge.v1 import taxonomy_pb2_grpc

__all__ = ["DATASET_KINDS", "Backend", "ConflictError"]

log = structlog.get_logger(__name__)

DATASET_KINDS = ("sft", "preference")


class ConflictError(PermanentError):
    """The request clashes with the current state (a finished job, a reused key)."""


def new_job_id(idempotency_key: str | None) -> str:
    """A time-ordered random id, or one derived from the client's idempotency key."""
    if idempotency_key:
        return "j-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:20]
    return f"j-{int(time.time() * 1000):011x}{os.urandom(4).hex()}"


def _grpc_error(exc: grpc.aio.AioRpcError, what: str) -> Exception:
    code = exc.code()
    detail = exc.details() or code.name
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFoundError(detail)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return PermanentError(detail)
    if code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ):
        return TransientError(f"{what} is unavailable ({code.name}): {detail}")
    return RuntimeError(f"{what} failed ({code.name}): {detail}")


class Backend:
    """One per gateway process."""

    def __init__(self, settings: GatewaySettings, bus: Bus) -> None:
        self._settings = settings
        self.bus = bus
        self.jobs = JobStore(bus)
        self.datasets = DatasetStore(bus)
        self._channels = {
            name: grpc.aio.insecure_channel(addr)
            for name, addr in (
                ("taxonomy", settings.taxonomy_addr),
                ("selector", settings.selector_addr),
            )
        }
        self._taxonomy = taxonomy_pb2_grpc.TaxonomyServiceStub(self._channels["taxonomy"])

    @property
    def _timeout(self) -> float:
        return self._settings.rpc_timeout_s

    async def close(self) -> None:
        """Close gRPC channels (the bus is closed by its owner)."""
        for channel in self._channels.values():
            await channel.close()

    async def ready(self) -> dict[str, bool]:
        """Whether NATS and each backing service answer."""
        status = {"nats": self.bus.nc.is_connected}
        for name, channel in self._channels.items():
            status[name] = await is_serving(channel)
        return status

    async def plan(self, recipe: pb.Recipe, include_seeds: bool = False) -> tpb.PlanJobResponse:
        """Dry-run a recipe through the taxonomy service."""
        try:
            return await self._taxonomy.PlanJob(
                tpb.PlanJobRequest(recipe=recipe, include_seeds=include_seeds),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise _grpc_error(exc, "the taxonomy service") from exc

    async def create_job(
        self, recipe: pb.Recipe, idempotency_key: str | None
    ) -> tuple[pb.JobProgress, bool]:
        """Validate, record and queue a job; all or nothing. Returns (progress, created)."""
        try:
            plan = await self.plan(recipe)
        except NotFoundError as exc:  # a name in the body, not the URL, is wrong: 422
            raise PermanentError(str(exc)) from exc
        job = pb.Job(
            id=new_job_id(idempotency_key),
            recipe=recipe,
            state=pb.JOB_STATE_PENDING,
            created_at_ms=now_ms(),
            taxonomy_version=plan.taxonomy_version,
        )
        job.updated_at_ms = job.created_at_ms
        if not await self.jobs.create(job):
            existing = await self.jobs.get(job.id)
            if existing is None or existing.recipe != recipe:
                raise ConflictError(
                    "this Idempotency-Key was already used for a different recipe; use a new key"
                )
            return await self.progress(job.id), False
        try:
            await publish_work(self.bus, Stage.PLAN, pb.JobRef(job_id=job.id), job.id)
        except Exception as exc:
            await self.jobs.delete(job.id)  # nothing half-created
            raise TransientError(f"could not queue the job: {exc}") from exc
        log.info("job_created", job_id=job.id, count=recipe.count, planned=plan.planned)
        return await self.progress(job.id), True

    async def progress(self, job_id: str) -> pb.JobProgress:
        """The job with its per-stage counts."""
        progress = await self.jobs.progress(job_id)
        if progress is None:
            raise NotFoundError(f"job {job_id!r} does not exist")
        return progress

    async def cancel(self, job_id: str) -> pb.JobProgress:
        """Stop a job: queued work for it is dropped as workers reach it."""
        state: list[int] = []

        def _cancel(job: pb.Job) -> bool:
            state.append(job.state)
            if job.state in TERMINAL_STATES:
                return False
            job.state = pb.JOB_STATE_CANCELLED
            job.error = "cancelled by request"
            return True

        job = await self.jobs.update(job_id, _cancel)
        if job is None:
            raise NotFoundError(f"job {job_id!r} does not exist")
        if state and state[-1] in TERMINAL_STATES and state[-1] != pb.JOB_STATE_CANCELLED:
            raise ConflictError(
                f"job {job_id} already {state_name(state[-1])}; there is nothing to cancel"
            )
        return await self.progress(job_id)

    async def dataset(self, job_id: str, kind: str) -> tuple[pb.DatasetInfo, AsyncIterator[bytes]]:
        """A finished job's dataset as a byte stream."""
        job = await self.jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"job {job_id!r} does not exist")
        if job.state != pb.JOB_STATE_SUCCEEDED:
            raise ConflictError(
                f"job {job_id} is {state_name(job.state)}; datasets exist once it has succeeded "
                f"(poll GET /v1/jobs/{job_id})"
            )
        info = next((d for d in job.datasets if d.kind == kind), None)
        if info is None:
            raise NotFoundError(f"job {job_id} has no {kind} dataset")
        return info, self.datasets.stream(info.object_name or dataset_object(job_id, kind))

    async def taxonomies(self) -> tpb.ListTaxonomiesResponse:
        """Every taxonomy the taxonomy service serves."""
        try:
            return await self._taxonomy.ListTaxonomies(
                tpb.ListTaxonomiesRequest(), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise _grpc_error(exc, "the taxonomy service") from exc

    async def taxonomy(self, taxonomy_id: str) -> pb.Taxonomy:
        """One taxonomy, whole."""
        try:
            return await self._taxonomy.GetTaxonomy(
                tpb.GetTaxonomyRequest(id=taxonomy_id), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise _grpc_error(exc, "the taxonomy service") from exc
