"""TaxonomyService over gRPC: thin; taxonomies live in versions, logic in plan/edits/expansion."""

from __future__ import annotations

import difflib
import json

from services.taxonomy.document import SLUG, dump_taxonomy, parse_taxonomy
from services.taxonomy.edits import apply_edits, apply_review
from services.taxonomy.induction import CHUNK, chunk_id
from services.taxonomy.plan import plan_job
from services.taxonomy.tree import index
from services.taxonomy.versions import TaxonomyStore
from taxoforge.bus import Stage
from taxoforge.context import ServiceContext
from taxoforge.datasets import write_object
from taxoforge.errors import ConflictError, NotFoundError, PermanentError
from taxoforge.grpc_server import Context
from taxoforge.jobs.model import JobKind
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import taxonomy_pb2 as tpb
from taxoforge.v1 import taxonomy_pb2_grpc

__all__ = ["TaxonomyServicer"]

_MAX_INSTRUCTIONS = 200_000
# Seeds one PlanJob reply may list (a dry run's sample): a few KB each, one message in all.
_MAX_LISTED_SEEDS = 1000


class TaxonomyServicer(taxonomy_pb2_grpc.TaxonomyServiceServicer):
    """Taxonomies, their versions and edits, plans, and the expansion and induction jobs."""

    def __init__(self, ctx: ServiceContext, store: TaxonomyStore) -> None:
        self._ctx = ctx
        self._store = store

    async def ListTaxonomies(
        self, request: tpb.ListTaxonomiesRequest, context: Context
    ) -> tpb.ListTaxonomiesResponse:
        out = tpb.ListTaxonomiesResponse()
        for idx in await self._store.all():
            latest = idx.versions[-1]
            out.taxonomies.add(
                id=idx.id, version=latest.version, title=idx.title, leaves=latest.leaves
            )
        return out

    async def GetTaxonomy(self, request: tpb.GetTaxonomyRequest, context: Context) -> pb.Taxonomy:
        return await self._store.get(request.id, request.version)

    async def ListVersions(
        self, request: tpb.ListVersionsRequest, context: Context
    ) -> pb.TaxonomyIndex:
        idx = await self._store.index(request.id)
        if idx is None:
            raise NotFoundError(f"taxonomy {request.id!r} does not exist")
        return idx

    async def ImportTaxonomy(
        self, request: tpb.ImportTaxonomyRequest, context: Context
    ) -> pb.Taxonomy:
        taxonomy = parse_taxonomy(request.document, request.source or "upload")
        exists = await self._store.index(taxonomy.id) is not None
        if exists and not request.new_version:
            raise ConflictError(
                f"taxonomy {taxonomy.id!r} exists; import it as a new version "
                "(new_version) or choose another id"
            )
        await self._store.ensure_writable(taxonomy.id)
        return await self._store.add_version(taxonomy, taxonomy.change)

    async def ExportTaxonomy(
        self, request: tpb.GetTaxonomyRequest, context: Context
    ) -> tpb.ExportTaxonomyResponse:
        taxonomy = await self._store.get(request.id, request.version)
        return tpb.ExportTaxonomyResponse(yaml=dump_taxonomy(taxonomy), version=taxonomy.version)

    async def EditTaxonomy(self, request: tpb.EditTaxonomyRequest, context: Context) -> pb.Taxonomy:
        change = f"edit: {request.message}" if request.message else "edit"
        await self._store.ensure_writable(request.id)
        return await self._store.update(
            request.id,
            request.base_version,
            change,
            lambda current: apply_edits(current.root, request.operations),
        )

    async def ReviewTaxonomy(
        self, request: tpb.ReviewTaxonomyRequest, context: Context
    ) -> pb.Taxonomy:
        if not (request.accept or request.reject or request.accept_rest):
            raise PermanentError("nothing to review: give accept, reject or accept_rest")

        def _review(current: pb.Taxonomy) -> pb.TaxonomyNode:
            root, accepted, rejected = apply_review(
                current.root, request.accept, request.reject, request.accept_rest
            )
            changes.append(f"review: {accepted} accepted, {rejected} rejected")
            return root

        changes: list[str] = []
        await self._store.ensure_writable(request.id)
        preview = await self._store.get(request.id, request.base_version)
        _review(preview)  # validates, and says what the review does
        return await self._store.update(request.id, request.base_version, changes[0], _review)

    async def PlanJob(self, request: tpb.PlanJobRequest, context: Context) -> tpb.PlanJobResponse:
        recipe = request.recipe
        taxonomy = await self._store.get(recipe.taxonomy_id, recipe.taxonomy_version)
        tasks = None
        if recipe.task_taxonomy_id:
            tasks = await self._store.get(recipe.task_taxonomy_id, recipe.task_taxonomy_version)
        plan = plan_job(recipe, taxonomy, request.job_id or "dry-run", tasks)
        if request.include_seeds and len(plan.seeds) > _MAX_LISTED_SEEDS:
            raise PermanentError(
                f"include_seeds lists at most {_MAX_LISTED_SEEDS} seeds (one reply holds them "
                f"all), not {len(plan.seeds)}; plan a smaller count to see its seeds"
            )
        out = tpb.PlanJobResponse(
            planned=len(plan.seeds),
            taxonomy_version=taxonomy.version,
            cells=plan.cells,
            totals=plan.totals,
            task_taxonomy_version=tasks.version if tasks else "",
        )
        if request.include_seeds:
            out.seeds.extend(plan.seeds)
        return out

    async def PrepareExpansion(
        self, request: tpb.PrepareExpansionRequest, context: Context
    ) -> tpb.PreparedJob:
        spec = pb.ExpandRequest()
        spec.CopyFrom(request.spec)
        if not spec.model.model:
            raise PermanentError("model.model is required (the generator role's model)")
        spec.levels = spec.levels or 1
        spec.samples = spec.samples or 3
        spec.max_children = spec.max_children or 12
        spec.min_sessions = spec.min_sessions or 10
        spec.max_sessions = spec.max_sessions or 20
        for name, value, low, high in (
            ("levels", spec.levels, 1, 2),
            ("samples", spec.samples, 1, 20),
            ("max_children", spec.max_children, 1, 50),
            ("min_sessions", spec.min_sessions, 1, 40),
            ("max_sessions", spec.max_sessions, spec.min_sessions, 40),
        ):
            if not low <= value <= high:
                raise PermanentError(f"{name} must be between {low} and {high}, not {value}")
        base = await self._store.get(spec.taxonomy_id, spec.base_version)
        await self._store.ensure_writable(spec.taxonomy_id)  # its proposals would change it
        nodes = index(base.root)
        if not spec.node_ids:
            raise PermanentError("node_ids is empty: name the nodes to expand")
        for node_id in spec.node_ids:
            if node_id not in nodes or node_id == base.root.id:
                close = difflib.get_close_matches(node_id, list(nodes), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise PermanentError(
                    f"node {node_id!r} does not exist in taxonomy {base.id!r}{hint}"
                )
            if nodes[node_id].node.kind == "session":
                raise PermanentError(f"node {node_id!r} is a syllabus session; expand its subject")
        node_ids = list(dict.fromkeys(spec.node_ids))
        job = _new_job(request.job_id, JobKind.EXPAND, len(node_ids), base.version, spec.name)
        job.expand.CopyFrom(spec)
        return tpb.PreparedJob(
            job=job,
            stage=Stage.EXPAND.value,
            tasks=[pb.TaxonomyTask(job_id=job.id, node_id=n) for n in node_ids],
            item_ids=node_ids,
        )

    async def PrepareInduction(
        self, request: tpb.InduceTaxonomyRequest, context: Context
    ) -> tpb.PreparedJob:
        spec = pb.InduceRequest()
        spec.CopyFrom(request.spec)
        instructions = [text.strip() for text in request.instructions if text.strip()]
        if not instructions:
            raise PermanentError("no instructions: give at least one non-empty instruction")
        if len(instructions) > _MAX_INSTRUCTIONS:
            raise PermanentError(f"at most {_MAX_INSTRUCTIONS} instructions per induction")
        if not spec.model.model:
            raise PermanentError("model.model is required (the tagger role's model)")
        if await self._store.index(spec.taxonomy_id) is not None:
            raise ConflictError(f"taxonomy {spec.taxonomy_id!r} exists; choose another id")
        if not SLUG.match(spec.taxonomy_id):
            raise PermanentError(
                f"taxonomy_id {spec.taxonomy_id!r} must be a lowercase slug (letters, digits, '-')"
            )
        spec.min_frequency = spec.min_frequency or 2
        spec.merge_threshold = spec.merge_threshold or 0.85
        if not 0 < spec.merge_threshold <= 1:
            raise PermanentError("merge_threshold must be in (0, 1]")
        spec.embedder.model = spec.embedder.model or "local/all-minilm-l6-v2"
        spec.instructions = len(instructions)
        chunks = (len(instructions) + CHUNK - 1) // CHUNK
        job = _new_job(request.job_id, JobKind.INDUCE, chunks, "", spec.name)
        spec.input_object = f"inputs/{job.id}.jsonl"
        body = "\n".join(json.dumps(text, ensure_ascii=False) for text in instructions) + "\n"
        await write_object(self._ctx.bus, spec.input_object, body.encode("utf-8"))
        job.induce.CopyFrom(spec)
        return tpb.PreparedJob(
            job=job,
            stage=Stage.INDUCE.value,
            tasks=[pb.TaxonomyTask(job_id=job.id, chunk=c) for c in range(chunks)],
            item_ids=[chunk_id(c) for c in range(chunks)],
        )


def _new_job(job_id: str, kind: JobKind, planned: int, version: str, name: str) -> pb.Job:
    """The job to record (the gateway stamps its tenant, limit and times as it records it)."""
    if not job_id:
        raise PermanentError("job_id is required: the id the job will be recorded under")
    job = pb.Job(
        id=job_id,
        kind=kind.value,
        state=pb.JOB_STATE_RUNNING,
        planned=planned,
        taxonomy_version=version,
    )
    job.recipe.name = name or kind.value
    return job
