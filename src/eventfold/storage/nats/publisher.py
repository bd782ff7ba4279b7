"""What API nodes do with the stream: publish accepted batches (the 202 waits for
JetStream's acknowledgement), recognise repeated Idempotency-Keys, and read the backlog
for backpressure."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence

import nats.errors
import nats.js.errors
from nats.js import api

from eventfold.domain.fold_input import FoldSource
from eventfold.errors import IdempotencyConflict, StorageUnavailable
from eventfold.settings import Settings
from eventfold.storage.base import FoldLag, IdempotencyClaim, LogEntries, Storage
from eventfold.storage.nats.connection import JetStreamConnection, translated
from eventfold.storage.nats.wire import (
    BODY_HASH,
    EVENTS,
    encode_batch,
    event_count,
    stored_size,
)

_ATTEMPT_SECONDS = 2.0  # one publish's wait for its acknowledgement before trying again
# The measured bytes per event follow this node's last few thousand batches.
_BYTES_PER_EVENT_MEMORY = 0.999


class NatsPublisher:
    """The ``EventLog`` of API nodes, over JetStream."""

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self._connection = JetStreamConnection(settings)
        self._stream = settings.nats_stream
        self._publish_timeout_seconds = settings.nats_publish_timeout_seconds
        self._storage = storage
        # Stored bytes and events of the batches this node published (decaying sums).
        self._published_bytes = 0.0
        self._published_events = 0.0

    async def connect(self) -> None:
        """Connects (reconnecting forever afterwards) and makes the stream and consumer."""
        await self._connection.connect()

    async def disconnect(self) -> None:
        await self._connection.disconnect()

    async def append(
        self,
        account_id: int,
        received_at_ms: int,
        events: LogEntries,
        claim: IdempotencyClaim | None = None,
        fold_sources: Sequence[FoldSource | None] | None = None,
    ) -> bool:
        # fold_sources: workers fold from the stream, in their own processes.
        if claim is not None:
            known = await self._applied_hash(account_id, claim.key)
            if known is not None and known != claim.body_hash:
                raise _conflict(claim)
            if known is not None:
                return False  # applied already
        # Every publish carries an id, so that trying again after a lost acknowledgement
        # is recognised by JetStream instead of storing the batch twice.
        message_id = f"{account_id}:{claim.key}" if claim else uuid.uuid4().hex
        headers = {"Nats-Msg-Id": message_id, EVENTS: str(len(events))}
        if claim is not None:
            headers[BODY_HASH] = claim.body_hash.hex()
        payload = encode_batch(account_id, received_at_ms, events, claim)
        subject = f"{self._stream}.batches.{account_id}"
        ack = await self._publish(subject, payload, headers)
        self._measure(stored_size(subject, headers, len(payload)), len(events))
        if ack.duplicate and claim is not None:
            await self._check_repeat(ack.seq, account_id, claim)
            return False
        return True

    async def _publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> api.PubAck:
        """Publishes without waiting for other requests' acknowledgements (they are
        awaited together); tries again until the publish timeout, then gives up."""
        js = self._connection.jetstream()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_timeout_seconds
        while True:
            left = deadline - loop.time()
            try:
                future = await js.publish_async(
                    subject, payload, wait_stall=max(left, 0.01), headers=headers
                )
                return await asyncio.wait_for(future, min(_ATTEMPT_SECONDS, max(left, 0.01)))
            except (TimeoutError, nats.errors.Error) as error:
                if loop.time() + 0.2 >= deadline:
                    raise StorageUnavailable(
                        "the event log (NATS JetStream) did not confirm the batch in "
                        f"{self._publish_timeout_seconds:g} s "
                        f"({type(error).__name__}); it may or may not have been stored: "
                        "retry with the same Idempotency-Key, which stores it at most once"
                    ) from None
                await asyncio.sleep(0.2)

    async def _check_repeat(self, position: int, account_id: int, claim: IdempotencyClaim) -> None:
        """A repeated id: the first batch is still in the stream, or already applied."""
        first: api.RawStreamMsg | None = None
        with translated("does not answer"), contextlib.suppress(nats.js.errors.NotFoundError):
            first = await self._connection.jetstream().get_msg(self._stream, position)
        if first is not None:
            stored: bytes | None = bytes.fromhex((first.headers or {}).get(BODY_HASH, ""))
        else:
            stored = await self._applied_hash(account_id, claim.key)
        if stored is not None and stored != claim.body_hash:
            raise _conflict(claim)

    async def _applied_hash(self, account_id: int, key: str) -> bytes | None:
        """The body hash of a batch applied under this key (a database read, off the loop)."""
        stored: bytes | None = await asyncio.to_thread(
            self._storage.idempotency_hash, account_id, key
        )
        return stored

    def forget_idempotency_keys(self, before_ms: int) -> None:
        self._storage.forget_idempotency_keys(before_ms)

    async def backlog(self, now_ms: int) -> FoldLag:
        """Events in the batches not yet applied, plus anything unfolded in the database;
        the age of the oldest of either."""
        js = self._connection.jetstream()
        folding = await self._storage.backlog(now_ms)
        with translated("does not answer"):
            state = (await js.stream_info(self._stream)).state
            oldest = None
            if state.messages:
                # The first batch still there at or after first_seq: the one it names may
                # be applied meanwhile, and the reading would have no age at all.
                with contextlib.suppress(nats.js.errors.NotFoundError):  # all applied
                    oldest = await js.get_msg(
                        self._stream, state.first_seq, subject=f"{self._stream}.>", next=True
                    )
        seconds = folding.seconds
        if oldest is not None and oldest.time is not None:
            # Against the reading's clock, as the database's own age is.
            waited = (now_ms - oldest.time.timestamp() * 1000) / 1000
            seconds = max(seconds, waited)
        events = self._events_in_stream(state.messages, state.bytes, oldest)
        return FoldLag(folding.events + events, seconds, folding.quarantined, folding.folded)

    def _events_in_stream(
        self, messages: int, stored_bytes: int, oldest: api.RawStreamMsg | None
    ) -> int:
        """The stream counts batches and bytes; events are its bytes over the bytes an
        event takes there. Reading every batch's count would cost a request per batch;
        the stream's bytes cost nothing more, and are exact while batches are alike. The
        bytes per event are measured on the batches this node published (their stored
        size, subject and headers included, over their events); a node that published
        none yet measures the oldest batch, by its event count header. Each batch counts
        at least one event."""
        if not messages:
            return 0
        per_event = None
        if self._published_events:
            per_event = self._published_bytes / self._published_events
        elif oldest is not None and oldest.data is not None:
            counted = event_count(oldest.headers or {})
            if counted:
                size = stored_size(oldest.subject or "", oldest.headers or {}, len(oldest.data))
                per_event = size / counted
        if per_event is None:
            return messages
        return max(messages, round(stored_bytes / per_event))

    def _measure(self, stored_bytes: int, events: int) -> None:
        if events:
            keep = _BYTES_PER_EVENT_MEMORY
            self._published_bytes = self._published_bytes * keep + stored_bytes
            self._published_events = self._published_events * keep + events

    async def erasure_bound(self) -> int | None:
        """The stream's last position: every batch answered 202 before now is at or
        below it."""
        with translated("does not answer; nothing was erased, retry"):
            info = await self._connection.jetstream().stream_info(self._stream)
        return int(info.state.last_seq)


def _conflict(claim: IdempotencyClaim) -> IdempotencyConflict:
    return IdempotencyConflict(
        f"the Idempotency-Key {claim.key[:80]!r} was already used with a different body; "
        "use a new key for a new batch"
    )
