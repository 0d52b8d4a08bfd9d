"""Tag vectors made while a job's tag step goes on, so its cluster step finds them cached.

The cluster step embeds every distinct canonical tag of the job (~30k for 100k rows) before it
merges near-synonyms: with the local model, the step's largest cost. The tags are known page
by page long before that, while the tag step waits on the model. :class:`TagPrefetch` takes
each tagged page's tags and embeds their canonical forms in the background, with the local
model's low-priority embedder (:meth:`~taxoforge.embeddings.LocalMiniLM.in_background`): one
thread that takes only a core nothing else wants, so the tag step is not slowed. The vectors
go to the same process cache (and machine store) the cluster step reads, and they are the
same vectors (to the ~1e-5 by which a batch's other texts may move them in any case), so
the cluster step works as before: it embeds what is still missing itself.

Only the local model is embedded ahead: a declared model's calls cost money and are not
cached in the process. Nothing here is needed for a job to be right, so any fault is logged
and the job's tags are left to the cluster step.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Iterable

import structlog

from taxoforge.embeddings import (
    ENCODERS,
    CachedEmbedder,
    Embedder,
    LocalMiniLM,
    release_local_models,
)
from taxoforge.labels import canonical

__all__ = ["TagPrefetch"]

log = structlog.get_logger(__name__)

# Canonical tags embedded per background call: large enough to batch well, small enough that
# the cluster step, when it takes over, waits at most a moment for the call under way.
_BATCH = 256
# Jobs whose raw tags are remembered (those already queued are not canonicalized again).
_JOBS = 8
# Seconds with nothing queued before the background model's memory goes back (loading it
# again from the cached graph takes a fraction of a second).
IDLE_RELEASE_S = 30.0


class _Job:
    def __init__(self, embedder: CachedEmbedder) -> None:
        self.embedder = embedder
        self.seen: set[str] = set()  # raw tags queued, ever
        self.pending: dict[str, None] = {}  # raw tags not embedded yet, in arrival order
        self.embedded = 0  # raw tags whose batch was embedded


class TagPrefetch:
    """Per process: the tags of pages this process tagged, embedded ahead of the cluster step.

    ``add`` is called by the tag handler for each page it stored; ``settle`` by the cluster
    step before it embeds: it stops the job's queue and waits for the call under way, whose
    vectors then land in the cache.
    """

    def __init__(self, idle_release_s: float = IDLE_RELEASE_S) -> None:
        self._jobs: OrderedDict[str, _Job | None] = OrderedDict()  # None: not the local model
        self._task: asyncio.Task[None] | None = None  # the drain
        self._releasing: asyncio.Task[None] | None = None  # the idle release
        # The job whose batch is being embedded, and that batch.
        self._running: tuple[str, asyncio.Task[None]] | None = None
        self._idle_release_s = idle_release_s
        self._release: asyncio.TimerHandle | None = None

    def add(self, job_id: str, make_embedder: Callable[[], Embedder], tags: Iterable[str]) -> None:
        """Queue ``tags`` of the job (repeats and tags queued before are skipped).
        ``make_embedder`` gives the job's tag embedder; it is called once per job."""
        if job_id not in self._jobs:
            try:
                embedder: Embedder | None = make_embedder()
            except Exception as exc:  # the cluster step will say what is wrong with it
                log.warning("tag_prefetch_no_embedder", job_id=job_id, error=str(exc))
                embedder = None
            ahead = embedder.in_background() if isinstance(embedder, LocalMiniLM) else None
            self._jobs[job_id] = _Job(ahead) if ahead is not None else None
            while len(self._jobs) > _JOBS:
                self._jobs.popitem(last=False)
        self._jobs.move_to_end(job_id)
        job = self._jobs[job_id]
        if job is None:
            return
        for tag in tags:
            if tag not in job.seen:
                job.seen.add(tag)
                job.pending[tag] = None
        if job.pending and (self._task is None or self._task.done()):
            if self._release is not None:
                self._release.cancel()
                self._release = None
            self._task = asyncio.create_task(self._drain(), name="tag-prefetch")

    def queued(self, job_id: str) -> int:
        """Raw tags of the job still waiting to be embedded."""
        job = self._jobs.get(job_id)
        return len(job.pending) if job else 0

    async def settle(self, job_id: str) -> tuple[int, int]:
        """Stop embedding the job's tags ahead (what is left, the cluster step embeds) and
        wait for the batch under way, if it is the job's; with no other job's tags queued,
        the background model's memory goes back now (the cluster step needs its own).

        Returns how many distinct raw tags of the job were embedded ahead, and how many were
        still queued (both 0 for a job this process tagged none of)."""
        job = self._jobs.pop(job_id, None)
        left = 0
        if job is not None:
            left = len(job.pending)
            job.pending.clear()
        running = self._running
        if running is not None and running[0] == job_id:
            # The drain goes on with other jobs' tags; this job's batch is the one to wait for.
            await asyncio.wait([running[1]])
        task = self._task
        if not any(j is not None and j.pending for j in self._jobs.values()):
            if self._release is not None:
                self._release.cancel()
                self._release = None
            if task is not None and not task.done():
                await asyncio.wait([task])  # at most a moment: nothing is queued, so it ends
            await asyncio.to_thread(release_local_models, *_BACKGROUND_MODELS)
        return (job.embedded if job is not None else 0), left

    async def _drain(self) -> None:
        if self._releasing is not None and not self._releasing.done():
            await asyncio.wait([self._releasing])  # an idle release under way ends first
        while True:
            job_id = next((j for j, job in self._jobs.items() if job and job.pending), None)
            if job_id is None:
                break
            job = self._jobs[job_id]
            assert job is not None
            raw = list(job.pending)[:_BATCH]
            for tag in raw:
                del job.pending[tag]
            batch = asyncio.create_task(_embed(job.embedder, raw))
            self._running = (job_id, batch)
            try:
                await batch
                job.embedded += len(raw)
            except Exception as exc:  # ahead of need only: the cluster step embeds it
                log.warning("tag_prefetch_failed", job_id=job_id, error=str(exc))
                job.pending.clear()
            finally:
                self._running = None
        # Nothing queued: the background model's memory goes back unless pages come again soon.
        loop = asyncio.get_running_loop()
        self._release = loop.call_later(self._idle_release_s, self._release_idle)

    def _release_idle(self) -> None:
        self._release = None
        if self._task is None or self._task.done():
            # Kept, so it is referenced until done and a new drain waits for it.
            self._releasing = asyncio.create_task(
                asyncio.to_thread(release_local_models, *_BACKGROUND_MODELS), name="tag-release"
            )


# The background embedder's models (``LocalMiniLM.in_background``): the cluster step's stay.
_BACKGROUND_MODELS = tuple(f"{kind}@1" for kind in ENCODERS)


async def _embed(embedder: CachedEmbedder, raw: list[str]) -> None:
    forms = await asyncio.to_thread(_canonical_forms, raw)
    if forms:
        await embedder.embed(forms)


def _canonical_forms(raw: list[str]) -> list[str]:
    """The distinct non-empty canonical forms of ``raw``, as normalization makes them."""
    return list(dict.fromkeys(c for c in map(canonical, raw) if c))
