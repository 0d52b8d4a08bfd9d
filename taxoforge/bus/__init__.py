"""The NATS JetStream layer: topology, connection, publishing and the worker loop."""

from taxoforge.bus.connection import Bus
from taxoforge.bus.topology import CONSUMERS, Stage, work_subject
from taxoforge.bus.worker import Delivery, Worker

__all__ = ["CONSUMERS", "Bus", "Delivery", "Stage", "Worker", "work_subject"]
