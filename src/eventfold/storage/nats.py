"""The event log on a NATS JetStream cluster: API nodes publish accepted batches to a
replicated stream and answer 202 on its acknowledgement; workers fetch them through one
durable pull consumer and apply them to the database (``SqlStorage.apply_logged``).

Subjects are ``<stream>.batches.<account id>``: each account's batches form a partition
that can be filtered, inspected or purged on its own, and all workers share the one
consumer, which hands each batch to one of them at a time. Which worker folds which batch
and in what order does not matter: the fold is order-independent (see domain/profile.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from eventfold.domain.events import AcceptedEvent
from eventfold.errors import ConfigurationError, IdempotencyConflict, StorageUnavailable
from eventfold.settings import Settings, parse_log_url
from eventfold.storage.base import FoldLag, IdempotencyClaim, LoggedBatch, Storage

logger = logging.getLogger("eventfold.nats")

CONSUMER = "eventfold-fold"
_BODY_HASH = "Eventfold-Body-Hash"
_EVENTS = "Eventfold-Events"  # how many events the batch holds
_ATTEMPT_SECONDS = 2.0  # one publish's wait for its acknowledgement before trying again
_DEFAULT_REPLICAS = 3  # or 1 where the cluster is smaller (a single server)
_READY_SECONDS = 30.0  # how long start-up waits for JetStream to make the stream
# A server that falls silent (its host cut off, not closed) is noticed by its missed
# pings only: nats-py's default, a ping every 2 minutes with 2 outstanding, kept an API
# node on a cut-off NATS node for minutes (bench.cluster, nats-partition). At 2 s the
# client gives up on it after 4 to 6 s and reconnects to another node; a ping is a few
# bytes.
_PING_SECONDS = 2
_MAX_OUTSTANDING_PINGS = 2
# A batch whose apply failed goes back to the stream for any worker after this long
# (not after the ack wait): the database may answer again by then.
_RETRY_FAILED_SECONDS = 1.0
# What JetStream's file store counts for a message besides its subject, headers and
# payload (its record's length fields and hash; checked against stream_info on 2.15).
_STORED_OVERHEAD_BYTES = 34
# The measured bytes per event follow this node's last few thousand batches.
_BYTES_PER_EVENT_MEMORY = 0.999
# A worker fetches about this many events at a time (as many batches as that takes, by
# the batches it fetched before), whatever the worker asks for: each fetch is one fold
# transaction, and the backlog shrinks only when one commits. With 200 batches of 100
# events a step took 5 s on two busy cores, for which ingest's backpressure saw the fold
# fold nothing (services/fold_lag.py); 2,000 is the database fold's step too
# (worker.FOLD_BATCH_SIZE).
_FETCH_EVENTS = 2_000


class _WireBatch(msgspec.Struct, array_like=True):
    """A batch as it travels through the stream (MessagePack)."""

    account_id: int
    received_at_ms: int
    events: list[AcceptedEvent]
    idempotency_key: str | None = None
    body_hash: bytes | None = None
    claim_not_before_ms: int = 0


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_WireBatch)


def encode_batch(
    account_id: int,
    received_at_ms: int,
    events: Sequence[AcceptedEvent],
    claim: IdempotencyClaim | None,
) -> bytes:
    wire = _WireBatch(account_id, received_at_ms, list(events))
    if claim is not None:
        wire.idempotency_key = claim.key
        wire.body_hash = claim.body_hash
        wire.claim_not_before_ms = claim.not_before_ms
    return _encoder.encode(wire)


def decode_batch(position: int, payload: bytes) -> LoggedBatch:
    wire = _decoder.decode(payload)
    claim = None
    if wire.idempotency_key is not None and wire.body_hash is not None:
        claim = IdempotencyClaim(wire.idempotency_key, wire.body_hash, wire.claim_not_before_ms)
    return LoggedBatch(position, wire.account_id, wire.received_at_ms, wire.events, claim)


class NatsLog:
    """The ``EventLog`` of API nodes and the batch source of workers, over JetStream."""

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self._servers = parse_log_url(settings.log_url)
        self._settings = settings
        self._storage = storage
        self._stream = settings.nats_stream
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._subscription: JetStreamContext.PullSubscription | None = None
        # Stored bytes and events of the batches this node published (decaying sums).
        self._published_bytes = 0.0
        self._published_events = 0.0
        # Events per batch fetched (a moving average); None: one batch is fetched first.
        self._fetched_events_per_batch: float | None = None

    # --- connection -------------------------------------------------------------------

    async def connect(self) -> None:
        """Connects (reconnecting forever afterwards) and makes the stream and consumer."""
        client = NatsClient()
        try:
            # Reconnects forever once connected, but the first connection has a deadline
            # (nats-py would otherwise retry it forever too, and the server never start).
            await asyncio.wait_for(
                client.connect(
                    servers=self._servers,
                    name="eventfold",
                    connect_timeout=2,
                    reconnect_time_wait=1,
                    max_reconnect_attempts=-1,
                    ping_interval=_PING_SECONDS,
                    max_outstanding_pings=_MAX_OUTSTANDING_PINGS,
                    error_cb=_log_error,
                ),
                _READY_SECONDS,
            )
        except (OSError, TimeoutError, nats.errors.Error) as error:
            await client.close()
            servers = ", ".join(self._servers)
            raise ConfigurationError(
                f"cannot reach NATS at {servers} ({str(error) or type(error).__name__}); "
                "check --log and that the servers run with JetStream enabled"
            ) from None
        self._nc = client
        self._js = self._nc.jetstream(timeout=5)
        # A cluster that is just starting or electing a leader answers after a while.
        deadline = asyncio.get_running_loop().time() + _READY_SECONDS
        while True:
            try:
                await self._ensure_stream_and_consumer()
                return
            except (TimeoutError, nats.errors.Error) as error:
                if asyncio.get_running_loop().time() > deadline:
                    raise ConfigurationError(
                        f"JetStream at {', '.join(self._servers)} did not make the stream "
                        f"{self._stream!r} ({type(error).__name__}: {error}); check that "
                        "JetStream is enabled and a majority of the cluster runs"
                    ) from None
                await asyncio.sleep(0.5)

    async def disconnect(self) -> None:
        if self._nc is not None:
            await self._nc.close()

    async def _ensure_stream_and_consumer(self) -> None:
        js = self._jetstream()
        try:
            await js.stream_info(self._stream)
        except nats.js.errors.NotFoundError:
            await self._add_stream()
        ack_wait = self._settings.nats_ack_wait_seconds
        try:
            info = await js.consumer_info(self._stream, CONSUMER)
        except nats.js.errors.NotFoundError:
            info = None
        # Made, or given the configured ack wait when it was made with another one (the
        # request creates or updates, and the ack wait may change).
        if info is None or abs((info.config.ack_wait or 0) - ack_wait) > 0.001:
            await js.add_consumer(
                self._stream,
                durable_name=CONSUMER,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=ack_wait,
                max_deliver=-1,
                max_ack_pending=50_000,
            )

    async def _add_stream(self) -> None:
        """Makes the stream: replicated as configured, else on 3 nodes, or on as many as
        a smaller cluster (or a single server) has."""
        chosen = self._settings.nats_replicas
        for replicas in (chosen,) if chosen else (_DEFAULT_REPLICAS, 1):
            try:
                await self._jetstream().add_stream(
                    name=self._stream,
                    subjects=[f"{self._stream}.batches.*"],
                    # A batch leaves the stream once a worker has applied and acknowledged
                    # it; the database keeps it from then on.
                    retention=api.RetentionPolicy.WORK_QUEUE,
                    storage=api.StorageType.FILE,
                    num_replicas=replicas,
                    duplicate_window=self._settings.nats_duplicate_window_seconds,
                )
                return
            except nats.js.errors.APIError as error:
                if chosen or replicas == 1:
                    raise
                logger.warning(
                    "JetStream cannot keep %d replicas (%s); the stream %s gets 1",
                    replicas,
                    error.description,
                    self._stream,
                )

    def _jetstream(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("NatsLog.connect() was not awaited")
        return self._js

    # --- what API nodes do ------------------------------------------------------------

    async def append(
        self,
        account_id: int,
        received_at_ms: int,
        events: Sequence[AcceptedEvent],
        claim: IdempotencyClaim | None = None,
    ) -> bool:
        if claim is not None:
            known = await self._applied_hash(account_id, claim.key)
            if known is not None and known != claim.body_hash:
                raise _conflict(claim)
            if known is not None:
                return False  # applied already
        # Every publish carries an id, so that trying again after a lost acknowledgement
        # is recognised by JetStream instead of storing the batch twice.
        message_id = f"{account_id}:{claim.key}" if claim else uuid.uuid4().hex
        headers = {"Nats-Msg-Id": message_id, _EVENTS: str(len(events))}
        if claim is not None:
            headers[_BODY_HASH] = claim.body_hash.hex()
        payload = encode_batch(account_id, received_at_ms, events, claim)
        subject = f"{self._stream}.batches.{account_id}"
        ack = await self._publish(subject, payload, headers)
        self._measure(_stored_size(subject, headers, len(payload)), len(events))
        if ack.duplicate and claim is not None:
            await self._check_repeat(ack.seq, account_id, claim)
            return False
        return True

    async def _publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> api.PubAck:
        """Publishes without waiting for other requests' acknowledgements (they are
        awaited together); tries again until the publish timeout, then gives up."""
        js = self._jetstream()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.nats_publish_timeout_seconds
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
                        f"{self._settings.nats_publish_timeout_seconds:g} s "
                        f"({type(error).__name__}); it may or may not have been stored: "
                        "retry with the same Idempotency-Key, which stores it at most once"
                    ) from None
                await asyncio.sleep(0.2)

    async def _check_repeat(self, position: int, account_id: int, claim: IdempotencyClaim) -> None:
        """A repeated id: the first batch is still in the stream, or already applied."""
        first: api.RawStreamMsg | None = None
        with _translated("does not answer"), contextlib.suppress(nats.js.errors.NotFoundError):
            first = await self._jetstream().get_msg(self._stream, position)
        if first is not None:
            stored: bytes | None = bytes.fromhex((first.headers or {}).get(_BODY_HASH, ""))
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
        js = self._jetstream()
        folding = await self._storage.backlog(now_ms)
        with _translated("does not answer"):
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
            counted = _event_count(oldest.headers or {})
            if counted:
                size = _stored_size(oldest.subject or "", oldest.headers or {}, len(oldest.data))
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
        with _translated("does not answer; nothing was erased, retry"):
            info = await self._jetstream().stream_info(self._stream)
        return int(info.state.last_seq)

    # --- what workers do --------------------------------------------------------------

    async def fetch(self, max_batches: int, timeout: float) -> list[tuple[LoggedBatch, Msg]]:
        """Up to ``max_batches`` batches holding about ``_FETCH_EVENTS`` events, waiting
        up to ``timeout`` s for the first."""
        per_batch = self._fetched_events_per_batch
        wanted = 1 if per_batch is None else round(_FETCH_EVENTS / per_batch)
        with _translated("cannot deliver batches"):
            if self._subscription is None:
                self._subscription = await self._jetstream().pull_subscribe_bind(
                    CONSUMER, stream=self._stream
                )
            try:
                messages = await self._subscription.fetch(
                    max(1, min(max_batches, wanted)), timeout=timeout
                )
            except TimeoutError:
                return []
            fetched = []
            for message in messages:
                position = message.metadata.sequence.stream
                try:
                    fetched.append((decode_batch(position, message.data), message))
                except msgspec.DecodeError:
                    logger.error("stream message %d is not an eventfold batch; dropped", position)
                    await message.term()
        if fetched:
            events = max(1.0, sum(len(batch.events) for batch, _ in fetched) / len(fetched))
            self._fetched_events_per_batch = (
                events if per_batch is None else (0.8 * per_batch + 0.2 * events)
            )
        return fetched

    async def acknowledge(self, messages: Sequence[Msg]) -> None:
        """Tells JetStream the batches are applied (a lost ack means a redelivery, which
        the recorded positions turn into a no-op)."""
        with _translated("did not take acknowledgements"):
            for message in messages:
                await message.ack()

    @contextlib.asynccontextmanager
    async def holding(self, messages: Sequence[Msg]) -> AsyncIterator[None]:
        """While the block runs, tells JetStream every third of the ack wait that the
        batches are still being worked on: the ack wait can then be short, so that
        batches a dead worker held go to another one soon, without batches that a live
        worker takes long to apply going to a second worker meanwhile."""

        async def keep_telling() -> None:
            while True:
                await asyncio.sleep(self._settings.nats_ack_wait_seconds / 3)
                with contextlib.suppress(TimeoutError, nats.errors.Error):
                    for message in messages:
                        await message.in_progress()

        telling = asyncio.create_task(keep_telling())
        try:
            yield
        finally:
            telling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await telling

    async def give_back(self, messages: Sequence[Msg]) -> None:
        """Returns batches that could not be applied to the stream, for any worker to
        fetch again in ``_RETRY_FAILED_SECONDS`` (best effort: unreachable, JetStream
        hands them out again after the ack wait anyway)."""
        with contextlib.suppress(TimeoutError, nats.errors.Error):
            for message in messages:
                await message.nak(delay=_RETRY_FAILED_SECONDS)

    async def first_position(self) -> int:
        """The oldest position still in the stream: nothing below it can be delivered."""
        with _translated("does not answer"):
            info = await self._jetstream().stream_info(self._stream)
        return int(info.state.first_seq)


def _stored_size(subject: str, headers: Mapping[str, str], payload_bytes: int) -> int:
    """The bytes JetStream's file store counts for a message (NATS/1.0 header block)."""
    header_bytes = 12 + sum(len(key) + len(value) + 4 for key, value in headers.items())
    return _STORED_OVERHEAD_BYTES + len(subject) + header_bytes + payload_bytes


def _event_count(headers: Mapping[str, str]) -> int | None:
    try:
        return int(headers[_EVENTS])
    except (KeyError, ValueError):
        return None  # published before the header existed


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """NATS's errors, as the storage error the rest of eventfold knows."""
    try:
        yield
    except (TimeoutError, nats.errors.Error) as error:
        raise StorageUnavailable(
            f"the event log (NATS JetStream) {what} ({type(error).__name__})"
        ) from None


async def _log_error(error: Exception) -> None:
    """NATS client errors (lost connections, refused reconnects) as one line each; the
    client reconnects by itself and requests meanwhile get 503."""
    logger.warning("NATS: %s", str(error) or type(error).__name__)


def _conflict(claim: IdempotencyClaim) -> IdempotencyConflict:
    return IdempotencyConflict(
        f"the Idempotency-Key {claim.key[:80]!r} was already used with a different body; "
        "use a new key for a new batch"
    )
