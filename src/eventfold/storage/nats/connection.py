"""A connection to the JetStream cluster that makes sure the stream and the workers'
consumer exist; the publisher and the consumer each hold one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext, api

from eventfold.errors import ConfigurationError, StorageUnavailable
from eventfold.settings import Settings, parse_log_url

logger = logging.getLogger("eventfold.nats")

CONSUMER = "eventfold-fold"
_DEFAULT_REPLICAS = 3  # or 1 where the cluster is smaller (a single server)
_READY_SECONDS = 30.0  # how long start-up waits for JetStream to make the stream
# A server that falls silent (its host cut off, not closed) is noticed by its missed
# pings only: nats-py's default, a ping every 2 minutes with 2 outstanding, kept an API
# node on a cut-off NATS node for minutes (bench.cluster, nats-partition). At 2 s the
# client gives up on it after 4 to 6 s and reconnects to another node; a ping is a few
# bytes.
_PING_SECONDS = 2
_MAX_OUTSTANDING_PINGS = 2


class JetStreamConnection:
    def __init__(self, settings: Settings) -> None:
        self._servers = parse_log_url(settings.log_url)
        self._settings = settings
        self.stream = settings.nats_stream
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None

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
                        f"{self.stream!r} ({type(error).__name__}: {error}); check that "
                        "JetStream is enabled and a majority of the cluster runs"
                    ) from None
                await asyncio.sleep(0.5)

    async def disconnect(self) -> None:
        if self._nc is not None:
            await self._nc.close()

    def jetstream(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("connect() was not awaited")
        return self._js

    async def _ensure_stream_and_consumer(self) -> None:
        js = self.jetstream()
        try:
            await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            await self._add_stream()
        ack_wait = self._settings.nats_ack_wait_seconds
        try:
            info = await js.consumer_info(self.stream, CONSUMER)
        except nats.js.errors.NotFoundError:
            info = None
        # Made, or given the configured ack wait when it was made with another one (the
        # request creates or updates, and the ack wait may change).
        if info is None or abs((info.config.ack_wait or 0) - ack_wait) > 0.001:
            await js.add_consumer(
                self.stream,
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
                await self.jetstream().add_stream(
                    name=self.stream,
                    subjects=[f"{self.stream}.batches.*"],
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
                    self.stream,
                )


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
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
