"""The Python SDK: ``Client`` (a background thread) and ``AsyncClient`` (an asyncio task)
buffer events, send them in gzip batches with an Idempotency-Key, and retry safely;
``upsert_profile`` sets a person's custom fields and tags at once, retried likewise.

The names are loaded on first use, so the ``eventfold`` command does not import an HTTP
client it does not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventfold.client.aio import AsyncClient
    from eventfold.client.core import ClientError, InvalidEvent, InvalidProfile, QueueFull
    from eventfold.client.sync import Client

__all__ = ["AsyncClient", "Client", "ClientError", "InvalidEvent", "InvalidProfile", "QueueFull"]
_HOMES = {
    "AsyncClient": "aio",
    "Client": "sync",
    "ClientError": "core",
    "InvalidEvent": "core",
    "InvalidProfile": "core",
    "QueueFull": "core",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'eventfold.client' has no attribute {name!r}")
    return getattr(importlib.import_module(f"eventfold.client.{_HOMES[name]}"), name)
