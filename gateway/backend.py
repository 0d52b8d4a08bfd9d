"""What the gateway does behind its routes: jobs over NATS, taxonomies and selection over gRPC."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

import grpc
import structlog
import yaml
from google.protobuf.message import Message

from gateway.files import JobFiles
from gateway.ownership import Ownership
from gateway.settings import GatewaySettings
from gateway.tenants import Tenant
from taxoforge.bus import Bus, Stage
from taxoforge.datasets import DatasetStore, benchmark_object
from taxoforge.errors import ConflictError, NotFoundError, PermanentError
from taxoforge.grpc_server import client_channel, error_from_rpc, is_serving
from taxoforge.jobs.lifecycle import cancel, submit
from taxoforge.jobs.model import TERMINAL_STATES, new_job_id, state_name
from taxoforge.jobs.progress import job_progress
from taxoforge.jobs.store import JobStore
from taxoforge.pipeline import publish_work
from taxoforge.store import ItemStore
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import judge_pb2 as jpb
from taxoforge.v1 import judge_pb2_grpc, selector_pb2_grpc, taxonomy_pb2_grpc
from taxoforge.v1 import selector_pb2 as spb
from taxoforge.v1 import taxonomy_pb2 as tpb

__all__ = ["Backend"]

log = structlog.get_logger(__name__)

_TAXONOMY_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
# Work messages published at once when a job starts with many items.
_QUEUE_BATCH = 256


class Backend:
    """One per gateway process."""

    def __init__(self, settings: GatewaySettings, bus: Bus) -> None:
        self._settings = settings
        self.bus = bus
        self.jobs = JobStore(bus)
        self.items = ItemStore(bus)
        self.datasets = DatasetStore(bus)
        self.files = JobFiles(
            bus, self.jobs, settings.max_upload_bytes, check_benchmark=self._check_benchmark
        )
        self.owners = Ownership(bus)
        self._channels = {
            name: client_channel(addr)
            for name, addr in (
                ("taxonomy", settings.taxonomy_addr),
                ("selector", settings.selector_addr),
                ("judge", settings.judge_addr),
            )
        }
        self._taxonomy = taxonomy_pb2_grpc.TaxonomyServiceStub(self._channels["taxonomy"])
        self._judge = judge_pb2_grpc.JudgeServiceStub(self._channels["judge"])
        self._selector = selector_pb2_grpc.SelectorServiceStub(self._channels["selector"])

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

    async def plan(
        self, recipe: pb.Recipe, tenant: Tenant, include_seeds: bool = False
    ) -> tpb.PlanJobResponse:
        """Dry-run a recipe through the taxonomy service."""
        for taxonomy_id in (recipe.taxonomy_id, recipe.task_taxonomy_id):
            if taxonomy_id:
                await self._readable(taxonomy_id, tenant)
        resp: tpb.PlanJobResponse = await self._call(
            "PlanJob", tpb.PlanJobRequest(recipe=recipe, include_seeds=include_seeds)
        )
        return resp

    async def create_job(
        self, recipe: pb.Recipe, idempotency_key: str | None, tenant: Tenant
    ) -> tuple[pb.JobProgress, bool]:
        """Validate, record and queue a job; all or nothing. Returns (progress, created)."""
        await self._scope_benchmarks(recipe, tenant)
        try:
            plan = await self.plan(recipe, tenant)
        except NotFoundError as exc:  # a name in the body, not the URL, is wrong: 422
            raise PermanentError(str(exc)) from exc
        pinned = pb.Recipe()
        pinned.CopyFrom(recipe)
        # The job plans on the versions of now, whatever edits come before its plan stage runs.
        pinned.taxonomy_version = plan.taxonomy_version
        pinned.task_taxonomy_version = plan.task_taxonomy_version
        job = pb.Job(
            id=_job_id(idempotency_key, tenant),
            kind="generate",
            recipe=pinned,
            state=pb.JOB_STATE_PENDING,
            taxonomy_version=plan.taxonomy_version,
        )
        created = await self._record_and_queue(job, Stage.PLAN, tenant, "recipe")
        if created:
            log.info("job_created", job_id=job.id, count=recipe.count, planned=plan.planned)
        return await self.progress(job.id, tenant), created

    async def create_select_job(
        self,
        recipe: pb.Recipe,
        source: pb.ImportSource,
        idempotency_key: str | None,
        tenant: Tenant,
    ) -> tuple[pb.JobProgress, bool]:
        """Record and queue a selection job over an import. Returns (progress, created)."""
        await self._scope_benchmarks(recipe, tenant)
        if source.object:
            source.object = tenant.object(source.object)
            if not await self.datasets.exists(source.object):
                raise PermanentError(
                    "source.upload names no upload of yours; POST the file to /v1/uploads first"
                )
        job = pb.Job(
            id=_job_id(idempotency_key, tenant),
            kind="select",
            recipe=recipe,
            source=source,
            state=pb.JOB_STATE_SELECTING,
            phase=Stage.PREPARE.value,
            phase_planned=1,
        )
        if not await self._record_and_queue(job, Stage.PREPARE, tenant, "selection"):
            return await self.progress(job.id, tenant), False
        log.info("selection_job_created", job_id=job.id, source=source.name)
        return await self.progress(job.id, tenant), True

    async def _record_and_queue(
        self,
        job: pb.Job,
        first: Stage,
        tenant: Tenant,
        what: str,
        work: Sequence[tuple[Message, str]] = (),
    ) -> bool:
        """Record ``job`` as ``tenant``'s and queue its ``first`` stage's ``work`` (message,
        item id; by default one job-level step), all or nothing. False when its id (an
        Idempotency-Key's) already holds the same request; a different request under that key
        is a ConflictError."""
        work = work or [(pb.JobRef(job_id=job.id), "")]

        async def _queue() -> None:
            for start in range(0, len(work), _QUEUE_BATCH):
                await asyncio.gather(
                    *(
                        publish_work(self.bus, first, message, job.id, item_id)
                        for message, item_id in work[start : start + _QUEUE_BATCH]
                    )
                )

        return await submit(
            self.jobs, job, _queue, tenant=tenant.name, limit=_spend_limit(tenant), what=what
        )

    async def _scope_benchmarks(self, recipe: pb.Recipe, tenant: Tenant) -> None:
        """Benchmark names as the tenant's own registry names; an unknown one is refused now
        rather than failing the job later."""
        names = [tenant.benchmark(n) for n in recipe.selection.decontaminate]
        missing = [
            shown
            for shown, name in zip(recipe.selection.decontaminate, names, strict=True)
            if not await self.datasets.exists(benchmark_object(name))
        ]
        if missing:
            raise PermanentError(
                f"selection.decontaminate: {', '.join(map(repr, missing))} is not registered; "
                "PUT /v1/benchmarks/{name} first (GET /v1/benchmarks lists yours)"
            )
        if names:
            del recipe.selection.decontaminate[:]
            recipe.selection.decontaminate.extend(names)

    async def progress(self, job_id: str, tenant: Tenant) -> pb.JobProgress:
        """The job with its per-stage counts (another tenant's job does not exist)."""
        progress = await job_progress(self.jobs, self.items, job_id)
        if progress is None or progress.job.tenant != tenant.name:
            raise NotFoundError(f"job {job_id!r} does not exist")
        return progress

    async def cancel(self, job_id: str, tenant: Tenant) -> pb.JobProgress:
        """Stop a job: queued work for it is dropped as workers reach it."""
        job, before = await cancel(self.jobs, job_id, tenant.name)
        if job is None:
            raise NotFoundError(f"job {job_id!r} does not exist")
        if before in TERMINAL_STATES and before != pb.JOB_STATE_CANCELLED:
            raise ConflictError(
                f"job {job_id} already {state_name(before)}; there is nothing to cancel"
            )
        return await self.progress(job_id, tenant)

    async def _call(self, method: str, request: Message) -> Any:
        """A taxonomy service call, its errors as ours."""
        try:
            return await getattr(self._taxonomy, method)(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            error = error_from_rpc(exc, "the taxonomy service")
            if isinstance(error, NotFoundError) and self._settings.auth == "keys":
                # The service lists every taxonomy id it knows; other tenants' among them.
                error = NotFoundError(str(error).split("; known:")[0])
            raise error from exc

    async def _check_benchmark(self, object_name: str) -> tuple[int, str]:
        """The selector reads a stored benchmark file: (prompts, why none)."""
        try:
            resp: spb.CheckBenchmarkResponse = await self._selector.CheckBenchmark(
                spb.CheckBenchmarkRequest(object_name=object_name), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, "the selector service") from exc
        return int(resp.prompts), resp.refusal

    async def judge(self, request: jpb.JudgeBatchRequest) -> jpb.JudgeBatchResponse:
        """Judge now, through the judge service (the judge model's latency applies)."""
        try:
            resp: jpb.JudgeBatchResponse = await self._judge.JudgeBatch(
                request, timeout=self._settings.judge_timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, "the judge service") from exc
        return resp

    async def _readable(self, taxonomy_id: str, tenant: Tenant) -> None:
        """Raise NotFoundError unless ``tenant`` may read the taxonomy (its own, or shared)."""
        if tenant.name:
            owner = await self.owners.owner(taxonomy_id)
            if owner is not None and owner != tenant.name:
                raise NotFoundError(f"taxonomy {taxonomy_id!r} does not exist")

    async def _writable(self, taxonomy_id: str, tenant: Tenant) -> None:
        """Raise unless ``tenant`` may change the taxonomy: its own (a shared one is read-only)."""
        if not tenant.name:
            return
        owner = await self.owners.owner(taxonomy_id)
        if owner == tenant.name:
            return
        if owner is None:
            await self.taxonomy(taxonomy_id, tenant)  # 404 when there is no such taxonomy
            raise ConflictError(
                f"taxonomy {taxonomy_id!r} is shared and read-only; export it and import a copy "
                "under an id of your own to change it"
            )
        raise NotFoundError(f"taxonomy {taxonomy_id!r} does not exist")

    async def taxonomies(self, tenant: Tenant) -> tpb.ListTaxonomiesResponse:
        """Every taxonomy ``tenant`` may read."""
        resp: tpb.ListTaxonomiesResponse = await self._call(
            "ListTaxonomies", tpb.ListTaxonomiesRequest()
        )
        if tenant.name:
            owners = await self.owners.owners()
            kept = [t for t in resp.taxonomies if owners.get(t.id, tenant.name) == tenant.name]
            del resp.taxonomies[:]
            resp.taxonomies.extend(kept)
        return resp

    async def taxonomy(self, taxonomy_id: str, tenant: Tenant, version: str = "") -> pb.Taxonomy:
        """One taxonomy version, whole."""
        await self._readable(taxonomy_id, tenant)
        resp: pb.Taxonomy = await self._call(
            "GetTaxonomy", tpb.GetTaxonomyRequest(id=taxonomy_id, version=version)
        )
        return resp

    async def versions(self, taxonomy_id: str, tenant: Tenant) -> pb.TaxonomyIndex:
        """A taxonomy's history."""
        await self._readable(taxonomy_id, tenant)
        resp: pb.TaxonomyIndex = await self._call(
            "ListVersions", tpb.ListVersionsRequest(id=taxonomy_id)
        )
        return resp

    async def export(
        self, taxonomy_id: str, tenant: Tenant, version: str = ""
    ) -> tpb.ExportTaxonomyResponse:
        """A version as YAML."""
        await self._readable(taxonomy_id, tenant)
        resp: tpb.ExportTaxonomyResponse = await self._call(
            "ExportTaxonomy", tpb.GetTaxonomyRequest(id=taxonomy_id, version=version)
        )
        return resp

    async def import_taxonomy(
        self, document: str, source: str, new_version: bool, tenant: Tenant
    ) -> pb.Taxonomy:
        """A new taxonomy, or a new version, from a YAML or JSON document; a new id becomes
        ``tenant``'s."""
        taxonomy_id = _document_id(document)
        claimed = False
        if tenant.name and taxonomy_id:
            owner = await self.owners.owner(taxonomy_id)
            if owner is None:
                if await self._exists(taxonomy_id):
                    await self._writable(taxonomy_id, tenant)  # shared: read-only
                claimed = await self.owners.claim(taxonomy_id, tenant.name)
            if owner not in (None, tenant.name) or (owner is None and not claimed):
                # Ids are one namespace across tenants; say it is taken, show nothing of it.
                raise ConflictError(f"taxonomy id {taxonomy_id!r} is taken; choose another id")
        try:
            resp: pb.Taxonomy = await self._call(
                "ImportTaxonomy",
                tpb.ImportTaxonomyRequest(
                    document=document, source=source, new_version=new_version
                ),
            )
        except Exception:
            if claimed:
                await self.owners.release(taxonomy_id)
            raise
        # The service may read an id where the gateway read none; claim that one now.
        if (
            tenant.name
            and resp.id != taxonomy_id
            and not await self.owners.claim(resp.id, tenant.name)
        ):
            raise ConflictError(f"taxonomy id {resp.id!r} is taken; choose another id")
        return resp

    async def _exists(self, taxonomy_id: str) -> bool:
        try:
            await self._call("ListVersions", tpb.ListVersionsRequest(id=taxonomy_id))
        except NotFoundError:
            return False
        return True

    async def edit(self, request: tpb.EditTaxonomyRequest, tenant: Tenant) -> pb.Taxonomy:
        """Operations applied as one new version."""
        await self._writable(request.id, tenant)
        resp: pb.Taxonomy = await self._call("EditTaxonomy", request)
        return resp

    async def review(self, request: tpb.ReviewTaxonomyRequest, tenant: Tenant) -> pb.Taxonomy:
        """Proposals accepted or rejected as one new version."""
        await self._writable(request.id, tenant)
        resp: pb.Taxonomy = await self._call("ReviewTaxonomy", request)
        return resp

    async def expand(self, request: pb.ExpandRequest, tenant: Tenant) -> pb.JobProgress:
        """Start an expansion job."""
        await self._writable(request.taxonomy_id, tenant)
        prepared: tpb.PreparedJob = await self._call(
            "PrepareExpansion",
            tpb.PrepareExpansionRequest(spec=request, job_id=_job_id(None, tenant)),
        )
        return await self._start_taxonomy_job(prepared, tenant, "expansion")

    async def induce(self, request: tpb.InduceTaxonomyRequest, tenant: Tenant) -> pb.JobProgress:
        """Start an induction job; the taxonomy it makes is ``tenant``'s."""
        taxonomy_id = request.spec.taxonomy_id
        new_claim = False
        if tenant.name:
            owned = await self.owners.owner(taxonomy_id) == tenant.name
            if not owned and not await self.owners.claim(taxonomy_id, tenant.name):
                raise ConflictError(f"taxonomy id {taxonomy_id!r} is taken; choose another id")
            new_claim = not owned
        try:
            asked = tpb.InduceTaxonomyRequest()
            asked.CopyFrom(request)
            asked.job_id = _job_id(None, tenant)
            prepared: tpb.PreparedJob = await self._call("PrepareInduction", asked)
            return await self._start_taxonomy_job(prepared, tenant, "induction")
        except Exception:
            if new_claim:  # no job, no taxonomy: the id is free again
                await self.owners.release(taxonomy_id)
            raise

    async def _start_taxonomy_job(
        self, prepared: tpb.PreparedJob, tenant: Tenant, what: str
    ) -> pb.JobProgress:
        """Record a job the taxonomy service prepared and queue its work (one task per item)."""
        job = prepared.job
        work = list(zip(prepared.tasks, prepared.item_ids, strict=True))
        await self._record_and_queue(job, Stage(prepared.stage), tenant, what, work)
        log.info("taxonomy_job_created", job_id=job.id, kind=job.kind, items=len(work))
        return await self.progress(job.id, tenant)


def _job_id(idempotency_key: str | None, tenant: Tenant) -> str:
    """A new job id; one key gives one job per tenant (two tenants' keys never meet)."""
    if idempotency_key and tenant.name:
        return new_job_id(f"{tenant.name}\n{idempotency_key}")
    return new_job_id(idempotency_key)


def _spend_limit(tenant: Tenant) -> pb.SpendLimit:
    return pb.SpendLimit(tokens=tenant.job_limit.tokens, cost_usd=tenant.job_limit.cost_usd)


def _document_id(document: str) -> str:
    """The top-level id of a taxonomy document, or "" when it has none that can be read."""
    try:
        parsed = yaml.safe_load(document)
    except yaml.YAMLError:
        return ""
    value = parsed.get("id") if isinstance(parsed, dict) else None
    # Only an id the service accepts is claimed; for any other, the service says what is wrong.
    return value if isinstance(value, str) and _TAXONOMY_ID.fullmatch(value) else ""
