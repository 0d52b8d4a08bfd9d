"""What a service's servicers and handlers share, built once per process on the service
lifecycle (:mod:`taxoforge.service`): the job and item stores, the model client, the usage meter.

A service's ``app.py`` is ``build(ctx) -> ServiceParts`` and ``run_service(name, build)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from taxoforge import service
from taxoforge.bus import Bus
from taxoforge.jobs.store import JobStore
from taxoforge.llm import LLMClient
from taxoforge.llm.cache import RequestCache
from taxoforge.service import ServiceParts
from taxoforge.settings import ServiceSettings
from taxoforge.store import ItemStore
from taxoforge.usage import UsageMeter

__all__ = ["ServiceContext", "run_service"]


@dataclass
class ServiceContext:
    """Everything a service's servicer and handlers share, built once per process."""

    name: str
    settings: ServiceSettings
    bus: Bus
    jobs: JobStore
    items: ItemStore
    llm: LLMClient
    usage: UsageMeter
    instance: str

    @classmethod
    def open(cls, name: str, settings: ServiceSettings, bus: Bus, instance: str) -> ServiceContext:
        """The context of this process (``instance``), on its connected bus."""
        jobs = JobStore(bus)
        return cls(
            name=name,
            settings=settings,
            bus=bus,
            jobs=jobs,
            items=ItemStore(bus),
            llm=LLMClient(settings.llm, cache=RequestCache(bus)),
            usage=UsageMeter(jobs, instance),
            instance=instance,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Write the usage totals about once a second while serving, and once more at ``stop``."""
        await self.usage.run(stop)

    async def drain(self) -> None:
        """Write what the last work counted, once the workers have stopped."""
        await self.usage.flush()

    async def close(self) -> None:
        """Close the model client's connections, once gRPC has stopped."""
        await self.llm.close()


def run_service(
    name: str,
    build: Callable[[ServiceContext], ServiceParts],
    settings_type: type[ServiceSettings] = ServiceSettings,
) -> None:
    """Entry point of ``python -m services.<name>``: settings from env, then serve until SIGTERM."""
    service.run(name, ServiceContext.open, build, settings_type)
