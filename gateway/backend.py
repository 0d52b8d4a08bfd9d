"""What the gateway does behind its routes: jobs over NATS, taxonomies and selection over gRPC."""

from __future__ import annotations

from typing import Any

import grpc
import structlog
from google.protobuf.message import Message

from gateway.files import JobFiles
from gateway.settings import GatewaySettings
from taxoforge.bus import Bus, Stage
from taxoforge.datasets import DatasetStore
from taxoforge.errors import ConflictError, NotFoundError, PermanentError, TransientError
from taxoforge.grpc_server import is_serving
from taxoforge.pipeline import publish_work
from taxoforge.store import TERMINAL_STATES, JobStore, new_job_id, now_ms, state_name
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import judge_pb2 as jpb
from taxoforge.v1 import judge_pb2_grpc, taxonomy_pb2_grpc
from taxoforge.v1 import taxonomy_pb2 as tpb

__all__ = ["DATASET_KINDS", "Backend"]

log = structlog.get_logger(__name__)

DATASET_KINDS = ("sft", "preference", "openai-sft", "openai-dpo", "alpaca", "sharegpt")


def _grpc_error(exc: grpc.aio.AioRpcError, what: str) -> Exception:
    code = exc.code()
    detail = exc.details() or code.name
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFoundError(detail)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return PermanentError(detail)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return ConflictError(detail)
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
        self.files = JobFiles(bus, self.jobs, settings.max_upload_bytes)
        self._channels = {
            name: grpc.aio.insecure_channel(addr)
            for name, addr in (
                ("taxonomy", settings.taxonomy_addr),
                ("selector", settings.selector_addr),
                ("judge", settings.judge_addr),
            )
        }
        self._taxonomy = taxonomy_pb2_grpc.TaxonomyServiceStub(self._channels["taxonomy"])
        self._judge = judge_pb2_grpc.JudgeServiceStub(self._channels["judge"])

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
        resp: tpb.PlanJobResponse = await self._call(
            "PlanJob", tpb.PlanJobRequest(recipe=recipe, include_seeds=include_seeds)
        )
        return resp

    async def create_job(
        self, recipe: pb.Recipe, idempotency_key: str | None
    ) -> tuple[pb.JobProgress, bool]:
        """Validate, record and queue a job; all or nothing. Returns (progress, created)."""
        try:
            plan = await self.plan(recipe)
        except NotFoundError as exc:  # a name in the body, not the URL, is wrong: 422
            raise PermanentError(str(exc)) from exc
        pinned = pb.Recipe()
        pinned.CopyFrom(recipe)
        # The job plans on the versions of now, whatever edits come before its plan stage runs.
        pinned.taxonomy_version = plan.taxonomy_version
        pinned.task_taxonomy_version = plan.task_taxonomy_version
        job = pb.Job(
            id=new_job_id(idempotency_key),
            kind="generate",
            recipe=pinned,
            state=pb.JOB_STATE_PENDING,
            created_at_ms=now_ms(),
            taxonomy_version=plan.taxonomy_version,
        )
        job.updated_at_ms = job.created_at_ms
        if not await self.jobs.create(job):
            existing = await self.jobs.get(job.id)
            if existing is None or existing.recipe != pinned:
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

    async def create_select_job(
        self, recipe: pb.Recipe, source: pb.ImportSource, idempotency_key: str | None
    ) -> tuple[pb.JobProgress, bool]:
        """Record and queue a selection job over an import. Returns (progress, created)."""
        job = pb.Job(
            id=new_job_id(idempotency_key),
            kind="select",
            recipe=recipe,
            source=source,
            state=pb.JOB_STATE_SELECTING,
            phase=Stage.PREPARE.value,
            phase_planned=1,
            created_at_ms=now_ms(),
        )
        job.updated_at_ms = job.created_at_ms
        if not await self.jobs.create(job):
            existing = await self.jobs.get(job.id)
            if existing is None or existing.recipe != recipe or existing.source != source:
                raise ConflictError(
                    "this Idempotency-Key was already used for a different selection; use a new key"
                )
            return await self.progress(job.id), False
        try:
            await publish_work(self.bus, Stage.PREPARE, pb.JobRef(job_id=job.id), job.id)
        except Exception as exc:
            await self.jobs.delete(job.id)
            raise TransientError(f"could not queue the job: {exc}") from exc
        log.info("selection_job_created", job_id=job.id, source=source.name)
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

    async def _call(self, method: str, request: Message) -> Any:
        """A taxonomy service call, its errors as ours."""
        try:
            return await getattr(self._taxonomy, method)(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise _grpc_error(exc, "the taxonomy service") from exc

    async def judge(self, request: jpb.JudgeBatchRequest) -> jpb.JudgeBatchResponse:
        """Judge now, through the judge service (the judge model's latency applies)."""
        try:
            resp: jpb.JudgeBatchResponse = await self._judge.JudgeBatch(
                request, timeout=self._settings.judge_timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise _grpc_error(exc, "the judge service") from exc
        return resp

    async def taxonomies(self) -> tpb.ListTaxonomiesResponse:
        """Every taxonomy the taxonomy service serves."""
        resp: tpb.ListTaxonomiesResponse = await self._call(
            "ListTaxonomies", tpb.ListTaxonomiesRequest()
        )
        return resp

    async def taxonomy(self, taxonomy_id: str, version: str = "") -> pb.Taxonomy:
        """One taxonomy version, whole."""
        resp: pb.Taxonomy = await self._call(
            "GetTaxonomy", tpb.GetTaxonomyRequest(id=taxonomy_id, version=version)
        )
        return resp

    async def versions(self, taxonomy_id: str) -> pb.TaxonomyIndex:
        """A taxonomy's history."""
        resp: pb.TaxonomyIndex = await self._call(
            "ListVersions", tpb.ListVersionsRequest(id=taxonomy_id)
        )
        return resp

    async def export(self, taxonomy_id: str, version: str = "") -> tpb.ExportTaxonomyResponse:
        """A version as YAML."""
        resp: tpb.ExportTaxonomyResponse = await self._call(
            "ExportTaxonomy", tpb.GetTaxonomyRequest(id=taxonomy_id, version=version)
        )
        return resp

    async def import_taxonomy(self, document: str, source: str, new_version: bool) -> pb.Taxonomy:
        """A new taxonomy, or a new version, from a YAML or JSON document."""
        resp: pb.Taxonomy = await self._call(
            "ImportTaxonomy",
            tpb.ImportTaxonomyRequest(document=document, source=source, new_version=new_version),
        )
        return resp

    async def edit(self, request: tpb.EditTaxonomyRequest) -> pb.Taxonomy:
        """Operations applied as one new version."""
        resp: pb.Taxonomy = await self._call("EditTaxonomy", request)
        return resp

    async def review(self, request: tpb.ReviewTaxonomyRequest) -> pb.Taxonomy:
        """Proposals accepted or rejected as one new version."""
        resp: pb.Taxonomy = await self._call("ReviewTaxonomy", request)
        return resp

    async def expand(self, request: pb.ExpandRequest) -> pb.JobProgress:
        """Start an expansion job."""
        job: pb.Job = await self._call("ExpandTaxonomy", request)
        return await self.progress(job.id)

    async def induce(self, request: tpb.InduceTaxonomyRequest) -> pb.JobProgress:
        """Start an induction job."""
        job: pb.Job = await self._call("InduceTaxonomy", request)
        return await self.progress(job.id)
