"""Connecting to NATS and creating the JetStream topology idempotently."""

from __future__ import annotations

import contextlib
import random
import ssl
from collections.abc import Mapping
from typing import Any

import nats
import nats.aio.client
import nats.js.client
import structlog
from google.protobuf.message import Message
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    PubAck,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from taxoforge.bus.topology import (
    CONSUMERS,
    DLQ_STREAM,
    DLQ_SUBJECTS,
    KV_ITEMS,
    KV_JOBS,
    KV_LLM_CACHE,
    KV_TAXONOMIES,
    OBJ_DATASETS,
    OBJ_TAXONOMIES,
    WORK_STREAM,
    WORK_SUBJECTS,
    work_subject,
)
from taxoforge.settings import BusSettings

__all__ = ["Bus", "tls_context"]

log = structlog.get_logger(__name__)

_DLQ_MAX_AGE_S = 14 * 24 * 3600.0


def _token_hex(nbytes: int) -> str:
    """nats-py's request inboxes end in a NUID (unique per connection: a random prefix and a
    counter) and two hex characters from ``secrets.token_hex``, one ``getrandom`` system call
    per request: about 3.5% of the generator's CPU in ``benchmarks/pipeline_bench.py``. They
    name a reply to match, not a secret, so Python's own generator serves as well."""
    return f"{random.getrandbits(8 * nbytes):0{2 * nbytes}x}"


nats.aio.client.token_hex = _token_hex  # type: ignore[attr-defined,assignment]
nats.js.client.token_hex = _token_hex  # type: ignore[attr-defined,assignment]


class Bus:
    """One NATS connection with the JetStream handles every process uses."""

    def __init__(self, nc: NATS, settings: BusSettings) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=10.0)
        self.settings = settings
        self._kv: dict[str, KeyValue] = {}
        self._objects: dict[str, ObjectStore] = {}
        self._closing: list[bool] = []

    @classmethod
    async def connect(cls, settings: BusSettings, name: str) -> Bus:
        """Connect and retry forever on disconnects (the nats-py default gives up after ~2 min)."""

        closing: list[bool] = []  # set by close(): a disconnect then is expected

        async def _on_error(exc: Exception) -> None:
            log.warning("nats_error", error=str(exc))

        async def _on_disconnect() -> None:
            if not closing:
                log.warning("nats_disconnected")

        async def _on_reconnect() -> None:
            log.info("nats_reconnected")

        options: dict[str, Any] = {
            "servers": [u.strip() for u in settings.nats_url.split(",")],
            "name": name,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 1,
            "connect_timeout": 5,
            "error_cb": _on_error,
            "disconnected_cb": _on_disconnect,
            "reconnected_cb": _on_reconnect,
        }
        if settings.nats_user:
            options["user"] = settings.nats_user
        if settings.nats_password:
            options["password"] = settings.nats_password.get_secret_value()
        if settings.nats_creds_file:
            options["user_credentials"] = settings.nats_creds_file
        tls = tls_context(settings)
        if tls is not None:
            options["tls"] = tls
        nc = await nats.connect(**options)
        bus = cls(nc, settings)
        bus._closing = closing
        return bus

    async def ensure_topology(self) -> None:
        """Create (or update) streams and buckets; safe to call from every replica at once."""
        replicas = self.settings.replicas
        await self._ensure_stream(
            StreamConfig(
                name=WORK_STREAM,
                subjects=[WORK_SUBJECTS],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                num_replicas=replicas,
                duplicate_window=self.settings.duplicate_window_s,
            )
        )
        await self._ensure_stream(
            StreamConfig(
                name=DLQ_STREAM,
                subjects=[DLQ_SUBJECTS],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                num_replicas=replicas,
                max_age=_DLQ_MAX_AGE_S,
                discard=DiscardPolicy.OLD,
                duplicate_window=self.settings.duplicate_window_s,
            )
        )
        for bucket in (KV_JOBS, KV_ITEMS, KV_TAXONOMIES):
            await self.js.create_key_value(
                KeyValueConfig(
                    bucket=bucket, history=1, storage=StorageType.FILE, replicas=replicas
                )
            )
        try:
            await self.js.create_key_value(
                KeyValueConfig(
                    bucket=KV_LLM_CACHE,
                    history=1,
                    ttl=self.settings.llm_cache_ttl_s,
                    storage=StorageType.FILE,
                    replicas=replicas,
                    # Read before every model call: direct gets skip the JetStream API's JSON
                    # and base64, and any replica may answer (a stale read is only a miss).
                    direct=True,
                )
            )
        except BadRequestError:
            # A bucket made before its reads were direct: allow them, keep the rest as it is.
            info = await self.js.stream_info(f"KV_{KV_LLM_CACHE}")
            if not info.config.allow_direct:
                info.config.allow_direct = True
                await self.js.update_stream(info.config)
        for bucket in (OBJ_DATASETS, OBJ_TAXONOMIES):
            await self.js.create_object_store(
                bucket, ObjectStoreConfig(storage=StorageType.FILE, replicas=replicas)
            )

    async def ensure_consumer(self, service: str, ack_wait_s: float, max_ack_pending: int) -> None:
        """Create or update the service's durable pull consumer.

        The server never stops redelivering (``max_deliver=-1``): the worker loop counts deliveries
        itself and dead-letters a message past its limit, so a message that crashes its worker on
        the last delivery is still moved to the dead-letter stream rather than stranded.
        """
        subjects = [work_subject(stage) for stage in CONSUMERS[service]]
        config = ConsumerConfig(
            durable_name=service,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ack_wait_s,
            max_deliver=-1,
            max_ack_pending=max_ack_pending,
            max_waiting=512,
        )
        if len(subjects) == 1:
            config.filter_subject = subjects[0]
        else:
            config.filter_subjects = subjects
        await self.js.add_consumer(WORK_STREAM, config)

    async def _ensure_stream(self, config: StreamConfig) -> None:
        try:
            await self.js.add_stream(config)
        except BadRequestError:
            # Exists with another configuration: bring it to ours.
            await self.js.update_stream(config)

    async def publish(
        self,
        subject: str,
        message: Message,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> PubAck:
        """Publish a protobuf body; ``msg_id`` makes a republish within the window a no-op."""
        hdrs = {"Nats-Msg-Id": msg_id}
        if headers:
            hdrs.update(headers)
        return await self.js.publish(subject, message.SerializeToString(), headers=hdrs)

    async def kv(self, bucket: str) -> KeyValue:
        """A KV bucket's handle (bound once per process)."""
        if bucket not in self._kv:
            self._kv[bucket] = await self.js.key_value(bucket)
        return self._kv[bucket]

    async def objects(self, bucket: str) -> ObjectStore:
        """An object store bucket's handle (bound once per process)."""
        if bucket not in self._objects:
            self._objects[bucket] = await self.js.object_store(bucket)
        return self._objects[bucket]

    async def jobs_kv(self) -> KeyValue:
        """Job records and job-level state."""
        return await self.kv(KV_JOBS)

    async def items_kv(self) -> KeyValue:
        """Per-item stage results."""
        return await self.kv(KV_ITEMS)

    async def datasets(self) -> ObjectStore:
        """Exported datasets (and uploaded inputs)."""
        return await self.objects(OBJ_DATASETS)

    async def count_keys(self, bucket: str, pattern: str) -> int:
        """Count distinct keys matching ``pattern`` without reading them.

        An ephemeral consumer delivering the last message per subject reports how many subjects
        match as its ``num_pending``: one small server call, whatever the number of keys.
        """
        stream = f"KV_{bucket}"
        info = await self.js.add_consumer(
            stream,
            ConsumerConfig(
                filter_subject=f"$KV.{bucket}.{pattern}",
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=10.0,
                mem_storage=True,
                num_replicas=1,
            ),
        )
        try:
            return int(info.num_pending or 0)
        finally:
            with contextlib.suppress(NotFoundError):
                await self.js.delete_consumer(stream, info.name)

    async def close(self) -> None:
        """Drain: finish what is published and in flight, then close."""
        self._closing.append(True)
        if self.nc.is_connected:
            await self.nc.drain()
        elif not self.nc.is_closed:
            await self.nc.close()


def tls_context(settings: BusSettings) -> ssl.SSLContext | None:
    """The client TLS context the settings ask for, or None (plain, or nats-py's default for a
    tls:// URL without a CA file)."""
    if not (settings.nats_tls_ca_file or settings.nats_tls_cert_file):
        return None
    context = ssl.create_default_context(cafile=settings.nats_tls_ca_file)
    if settings.nats_tls_cert_file:
        if not settings.nats_tls_key_file:
            raise ValueError("TAXOFORGE_NATS_TLS_CERT_FILE needs TAXOFORGE_NATS_TLS_KEY_FILE too")
        context.load_cert_chain(settings.nats_tls_cert_file, settings.nats_tls_key_file)
    return context
