"""What workers do with the stream: fetch batches through the one durable consumer, say
they are still being applied, acknowledge them or give them back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

import msgspec
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from eventfold.settings import Settings
from eventfold.storage.base import LoggedBatch
from eventfold.storage.nats.connection import CONSUMER, JetStreamConnection, translated
from eventfold.storage.nats.wire import decode_batch

logger = logging.getLogger("eventfold.nats")

# A batch whose apply failed goes back to the stream for any worker after this long
# (not after the ack wait): the database may answer again by then.
_RETRY_FAILED_SECONDS = 1.0
# A worker fetches about this many events at a time (as many batches as that takes, by
# the batches it fetched before), whatever the worker asks for: each fetch is one fold
# transaction, and the backlog shrinks only when one commits. With 200 batches of 100
# events a step took 5 s on two busy cores, for which ingest's backpressure saw the fold
# fold nothing (services/fold_lag.py); 2,000 is the database fold's step too
# (worker.FOLD_BATCH_SIZE).
_FETCH_EVENTS = 2_000


class NatsConsumer:
    """The batch source of workers, over JetStream."""

    def __init__(self, settings: Settings) -> None:
        self._connection = JetStreamConnection(settings)
        self._ack_wait_seconds = settings.nats_ack_wait_seconds
        self._subscription: JetStreamContext.PullSubscription | None = None
        # Events per batch fetched (a moving average); None: one batch is fetched first.
        self._fetched_events_per_batch: float | None = None

    async def connect(self) -> None:
        await self._connection.connect()

    async def disconnect(self) -> None:
        await self._connection.disconnect()

    async def fetch(self, max_batches: int, timeout: float) -> list[tuple[LoggedBatch, Msg]]:
        """Up to ``max_batches`` batches holding about ``_FETCH_EVENTS`` events, waiting
        up to ``timeout`` s for the first."""
        per_batch = self._fetched_events_per_batch
        wanted = 1 if per_batch is None else round(_FETCH_EVENTS / per_batch)
        with translated("cannot deliver batches"):
            if self._subscription is None:
                self._subscription = await self._connection.jetstream().pull_subscribe_bind(
                    CONSUMER, stream=self._connection.stream
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
        with translated("did not take acknowledgements"):
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
                await asyncio.sleep(self._ack_wait_seconds / 3)
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
        with translated("does not answer"):
            info = await self._connection.jetstream().stream_info(self._connection.stream)
        return int(info.state.first_seq)
