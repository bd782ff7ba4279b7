"""``AsyncClient``: the same behaviour as ``Client``, on an asyncio task."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, Literal

import httpx2

from eventfold.client.core import (
    EVENTS_PATH,
    EXPORT_PATH,
    PROFILES_PATH,
    ClientError,
    ClientOptions,
    ErrorCallback,
    Event,
    QueueFull,
    RetryPolicy,
    build_event,
    build_upsert,
    decode_profile,
    encode_batch,
    encoded_size,
    export_refusal,
    export_request,
    headers,
    judge,
    log_error,
    new_idempotency_key,
)

_STOP = object()


class AsyncClient(ClientOptions):
    """Like ``Client``, for asyncio code. Use ``async with`` or call ``aclose()`` to send
    what is left (an event loop cannot be relied on at interpreter exit)."""

    def __init__(
        self,
        url: str,
        secret_key: str,
        *,
        batch_size: int = 100,
        flush_interval: float = 0.5,
        max_batch_bytes: int = 4 * 1024 * 1024,
        max_queue: int = 10_000,
        on_full: Literal["block", "drop"] = "block",
        on_error: ErrorCallback = log_error,
        retry: RetryPolicy | None = None,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(
            secret_key,
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_batch_bytes=max_batch_bytes,
            on_full=on_full,
            on_error=on_error,
            retry=retry,
        )
        self._http = httpx2.AsyncClient(base_url=url.rstrip("/"), timeout=timeout)
        self._queue: asyncio.Queue[Any] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def track(
        self,
        action: str,
        *,
        email: str | None = None,
        phone_number: str | None = None,
        profile_id: str | None = None,
        products: Sequence[dict[str, Any]] | None = None,
        custom: dict[str, Any] | None = None,
        tags: Sequence[str] | None = None,
        locale: str | None = None,
        timestamp: datetime | str | None = None,
        **extra: Any,
    ) -> None:
        """Queues one event; raises InvalidEvent at once if the server would reject it."""
        if self._closed:
            raise RuntimeError("this AsyncClient is closed")
        event = build_event(
            action,
            email,
            phone_number,
            profile_id,
            products,
            custom,
            tags,
            locale,
            timestamp,
            extra,
        )
        self._start()
        if self._on_full == "block":
            await self._queue.put(event)
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._report([event], QueueFull(f"the buffer of {self._queue.maxsize} events is full"))

    async def flush(self) -> None:
        """Returns once every event queued so far was sent (or given up)."""
        self._start()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put(done)
        await done

    async def aclose(self) -> None:
        """Sends what is queued, then stops."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            await self._queue.put(_STOP)
            await self._task
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def export_profiles(
        self, since: datetime | str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """As ``Client.export_profiles``, for ``async for``: every profile of the key's
        account, read a line at a time; ClientError for an answer other than 200,
        httpx2.TransportError for a stream cut short."""
        request = export_request(self._secret_key, since)
        async with self._http.stream("GET", EXPORT_PATH, **request) as response:
            if response.status_code != 200:
                raise export_refusal(response.status_code, await response.aread())
            async for line in response.aiter_lines():
                if line:
                    yield decode_profile(line)

    async def upsert_profile(
        self,
        *,
        email: str | None = None,
        phone_number: str | None = None,
        profile_id: str | None = None,
        custom: dict[str, Any] | None = None,
        add_tags: Sequence[str] | None = None,
        remove_tags: Sequence[str] | None = None,
        timestamp: datetime | str | None = None,
    ) -> None:
        """As ``Client.upsert_profile``: sets one person's custom fields and tags now,
        with retries; InvalidProfile, ClientError or an httpx2.RequestError otherwise."""
        body = build_upsert(
            email, phone_number, profile_id, custom, add_tags, remove_tags, timestamp
        )
        failure = await self._deliver(PROFILES_PATH, body, new_idempotency_key())
        if failure is not None:
            raise failure

    async def send_batch(self, events: Sequence[Event], idempotency_key: str) -> bool:
        """Sends one prepared batch now, with retries; True once the server accepted it."""
        return await self._send(events, idempotency_key)

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="eventfold-client")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        batch: list[Event] = []
        size, deadline = 0, 0.0
        while True:
            wait = max(0.0, deadline - loop.time()) if batch else None
            try:
                item = await asyncio.wait_for(self._queue.get(), wait)
            except TimeoutError:
                await self._send(batch)
                batch, size = [], 0
                continue
            if isinstance(item, asyncio.Future):
                await self._send(batch)
                batch, size = [], 0
                with contextlib.suppress(asyncio.InvalidStateError):
                    item.set_result(None)
                continue
            if item is _STOP:
                await self._send(batch)
                return
            if not batch:
                deadline = loop.time() + self._flush_interval
            batch.append(item)
            size += encoded_size(item)
            if self._batch_is_full(len(batch), size):
                await self._send(batch)
                batch, size = [], 0

    async def _send(self, events: Sequence[Event], idempotency_key: str | None = None) -> bool:
        if not events:
            return True
        key = idempotency_key or new_idempotency_key()
        failure = await self._deliver(EVENTS_PATH, encode_batch(events), key)
        if failure is None:
            return True
        self._report(events, failure)
        return False

    async def _deliver(self, path: str, body: bytes, key: str) -> Exception | None:
        """POSTs the body with retries; None once accepted, else the last failure."""
        failure: Exception = ClientError(0, "not sent")
        for attempt in range(self._retry.max_retries + 1):
            wait = None
            try:
                response = await self._http.post(
                    path, content=body, headers=headers(self._secret_key, key)
                )
            except httpx2.RequestError as error:
                # No answer, or one that could not be read (a body a proxy mangled):
                # tried again, under the same Idempotency-Key, so stored at most once.
                failure = error
            except Exception as error:  # e.g. an invalid URL: no retry can mend it
                failure = error
                break
            else:
                again, refusal, wait = judge(
                    response.status_code, response.headers.get("retry-after"), response.content
                )
                if refusal is None:
                    return None
                failure = refusal
                if not again:
                    break
            if attempt < self._retry.max_retries:
                await asyncio.sleep(self._retry.delay(attempt, wait))
        return failure
