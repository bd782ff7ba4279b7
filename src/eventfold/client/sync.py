"""``Client``: events are buffered and sent from a background thread."""

from __future__ import annotations

import atexit
import queue
import threading
import time
from collections.abc import Iterator, Sequence
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


class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()


class Client(ClientOptions):
    """Sends events to eventfold in batches, from a background thread.

    A batch goes out at ``batch_size`` events, ``flush_interval`` seconds after its first
    event, or ``max_batch_bytes`` (before compression), whichever comes first. Each batch
    carries an Idempotency-Key, so retries (network errors, 408, 429, 5xx; after
    ``Retry-After``) never duplicate events. Every event that is dropped or refused goes
    to ``on_error``: nothing is lost silently. ``close()`` (also at interpreter exit)
    sends what is left.
    """

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
        self._http = httpx2.Client(base_url=url.rstrip("/"), timeout=timeout)
        self._queue: queue.Queue[Any] = queue.Queue(max_queue)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="eventfold-client", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def track(
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
            raise RuntimeError("this Client is closed")
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
        if self._on_full == "block":
            self._queue.put(event)
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._report([event], QueueFull(f"the buffer of {self._queue.maxsize} events is full"))

    def flush(self, timeout: float | None = None) -> bool:
        """Blocks until every event queued so far was sent (or given up); False on timeout."""
        request = _Flush()
        self._queue.put(request)
        return request.done.wait(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Sends what is queued, then stops the thread."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def export_profiles(self, since: datetime | str | None = None) -> Iterator[dict[str, Any]]:
        """Every profile of the key's account, read from ``GET /api/v0/profiles/export``
        a line at a time as the iteration goes (the whole account is never in memory);
        ``since`` keeps the profiles last seen at or after it. The request is made when
        iteration starts; an answer other than 200 raises ClientError, and a stream cut
        short raises httpx2.TransportError (export again: nothing was skipped silently)."""
        request = export_request(self._secret_key, since)
        with self._http.stream("GET", EXPORT_PATH, **request) as response:
            if response.status_code != 200:
                raise export_refusal(response.status_code, response.read())
            for line in response.iter_lines():
                if line:
                    yield decode_profile(line)

    def upsert_profile(
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
        """Sets one person's custom fields and adds or removes tags, without an
        event, through ``POST /api/v0/profiles``, now (not buffered: it is not ordered
        with ``track``'s events, which the server orders by their timestamps anyway).
        The person is named by any of ``email``, ``phone_number`` and ``profile_id``
        (several link their profiles, as an event's do) and made if unknown. Without a
        ``timestamp`` the changes are stamped now. Raises InvalidProfile at once for
        changes the server would reject; retries as batches are retried (one
        Idempotency-Key, so never applied twice), then raises the last failure
        (ClientError, or an httpx2.RequestError). Returns once the server accepted."""
        body = build_upsert(
            email, phone_number, profile_id, custom, add_tags, remove_tags, timestamp
        )
        failure = self._deliver(PROFILES_PATH, body, new_idempotency_key())
        if failure is not None:
            raise failure

    def send_batch(self, events: Sequence[Event], idempotency_key: str) -> bool:
        """Sends one prepared batch now, with retries; True once the server accepted it."""
        return self._send(events, idempotency_key)

    def _run(self) -> None:
        batch: list[Event] = []
        size, deadline = 0, 0.0
        while True:
            wait = max(0.0, deadline - time.monotonic()) if batch else None
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                self._send(batch)
                batch, size = [], 0
                continue
            if isinstance(item, _Flush):
                self._send(batch)
                batch, size = [], 0
                item.done.set()
                continue
            if item is _STOP:
                self._send(batch)
                return
            if not batch:
                deadline = time.monotonic() + self._flush_interval
            batch.append(item)
            size += encoded_size(item)
            if self._batch_is_full(len(batch), size):
                self._send(batch)
                batch, size = [], 0

    def _send(self, events: Sequence[Event], idempotency_key: str | None = None) -> bool:
        if not events:
            return True
        key = idempotency_key or new_idempotency_key()
        failure = self._deliver(EVENTS_PATH, encode_batch(events), key)
        if failure is None:
            return True
        self._report(events, failure)
        return False

    def _deliver(self, path: str, body: bytes, key: str) -> Exception | None:
        """POSTs the body with retries; None once accepted, else the last failure."""
        failure: Exception = ClientError(0, "not sent")
        for attempt in range(self._retry.max_retries + 1):
            wait = None
            try:
                response = self._http.post(
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
                time.sleep(self._retry.delay(attempt, wait))
        return failure
