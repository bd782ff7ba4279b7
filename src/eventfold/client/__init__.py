"""The Python SDK: ``Client`` (a background thread) and ``AsyncClient`` (an asyncio task)
buffer events, send them in gzip batches with an Idempotency-Key, and retry safely."""

from eventfold.client.aio import AsyncClient
from eventfold.client.core import ClientError, InvalidEvent, QueueFull
from eventfold.client.sync import Client

__all__ = ["AsyncClient", "Client", "ClientError", "InvalidEvent", "QueueFull"]
