"""The delivery loop: sends the outbox's messages to their endpoints, for ever.

It runs on a thread of its own (with its own event loop) in ``eventfold serve`` and in
``eventfold worker``; any number of processes run one at once, each message attempted
by one at a time (a lease in the database, ``storage/sql_deliveries.py``).

Each endpoint has its own lane: a task that claims up to ``concurrency`` of that
endpoint's due messages, sends them at once over the endpoint's own connection pool,
records the attempts, and claims again until none is due. A lane that waits for a dead
endpoint (each attempt up to the timeout) holds only its own messages; the others' lanes
go on beside it. Per person, only the oldest message not delivered is claimed, so a
person's messages arrive in order.

The loop never dies of an error: it reports it in its health (``/healthz``), waits and
goes on; a lane that fails ends, its leases run out, and the next poll starts it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from eventfold.clock import now_ms as current_ms
from eventfold.domain.moments import iso_from_ms
from eventfold.domain.webhook_retries import Outcome, RetrySchedule, outcome_of
from eventfold.observability import metrics
from eventfold.services.fold import FoldHealth, combined_health, describe
from eventfold.services.webhook_sender import EndpointSender
from eventfold.storage.webhook_records import (
    AttemptRecord,
    AttemptResult,
    OutgoingMessage,
    WebhookRecord,
    WebhookStore,
)

logger = logging.getLogger("eventfold.webhooks")

# How often the loop looks for endpoints with due messages (also after a failure).
POLL_SECONDS = 0.05
RETRY_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    schedule: RetrySchedule
    allow_private: bool
    concurrency: int  # attempts in flight per endpoint
    timeout_seconds: float
    lease_seconds: float


class DeliveryLoop:
    def __init__(
        self,
        store: WebhookStore,
        options: DeliveryOptions,
        clock: Callable[[], int] = current_ms,
    ) -> None:
        self._store = store
        self._options = options
        self._clock = clock
        self._stop = threading.Event()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._senders: dict[str, EndpointSender] = {}
        self._polling = FoldHealth()  # the loop that looks for due endpoints
        # Endpoints whose lane failed and has recorded no result since, with the moment
        # of its last failure (replaced whole on each change: health readers on other
        # threads see one or the other).
        self._failing_lanes: dict[str, tuple[FoldHealth, float]] = {}
        # A lane that has not failed for this long is no longer shown (its webhook was
        # deleted, or another process delivered its messages); one whose attempts keep
        # raising fails again within a lease.
        self._lane_failure_shown = 2 * options.lease_seconds

    @property
    def health(self) -> FoldHealth:
        """The loop's, failing too while a lane fails (a claim or a record that raised,
        an attempt that raised) until that lane records a result again or has not
        failed for two leases."""
        lanes = [failing for failing, _ in self._recent_lane_failures().values()]
        if not lanes:
            return self._polling
        return FoldHealth.reported(combined_health([self._polling, *lanes]))

    def _recent_lane_failures(self) -> dict[str, tuple[FoldHealth, float]]:
        shown_since = time.monotonic() - self._lane_failure_shown
        return {w: found for w, found in self._failing_lanes.items() if found[1] > shown_since}

    def _lane_failed(self, webhook_id: str, error: BaseException) -> None:
        kept = self._recent_lane_failures()
        failing = kept[webhook_id][0] if webhook_id in kept else FoldHealth()
        failing.running = True
        failing.failed(error)
        self._failing_lanes = {**kept, webhook_id: (failing, time.monotonic())}

    def _lane_recovered(self, webhook_id: str) -> None:
        if webhook_id in self._failing_lanes:
            self._failing_lanes = {w: f for w, f in self._failing_lanes.items() if w != webhook_id}

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="eventfold-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Asks the loop to finish the attempts in flight, and waits for it."""
        self._stop.set()
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # closed: the loop waits to restart
                loop.call_soon_threadsafe(wake.set)
        if self._thread is not None:
            self._thread.join()

    def run(self) -> None:
        """Runs the loop until ``stop``; should the loop itself ever fail, it is logged,
        shown in the health, and started again a moment later."""
        while not self._stop.is_set():
            try:
                asyncio.run(self.run_async())
            except Exception as error:
                self._polling.failed(error)
                logger.exception("the webhook delivery loop failed; starting it again")
                self._stop.wait(RETRY_SECONDS)

    async def run_async(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        lanes: dict[str, asyncio.Task[None]] = {}
        self._polling.running = True
        try:
            while not self._stop.is_set():
                try:
                    due = await asyncio.to_thread(self._store.endpoints_due, self._clock())
                except Exception as error:
                    self._polling.failed(error)
                    logger.warning("looking for due webhook messages failed: %s", describe(error))
                    await self._pause(RETRY_SECONDS)
                    continue
                for webhook_id in due:
                    lane = lanes.get(webhook_id)
                    if lane is None or lane.done():
                        lanes[webhook_id] = asyncio.create_task(self._lane(webhook_id))
                for webhook_id in [w for w, lane in lanes.items() if lane.done()]:
                    del lanes[webhook_id]
                self._polling.succeeded()
                await self._pause(POLL_SECONDS)
            if lanes:  # let attempts in flight finish and be recorded
                await asyncio.wait(lanes.values(), timeout=self._options.timeout_seconds + 5)
        finally:
            for lane in lanes.values():
                lane.cancel()
            for sender in self._senders.values():
                await sender.close()
            self._senders.clear()  # closed: a restarted loop makes new ones
            self._polling.running = False

    async def _pause(self, seconds: float) -> None:
        assert self._wake is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    # --- one endpoint's lane ----------------------------------------------------------

    async def _lane(self, webhook_id: str) -> None:
        options = self._options
        sender = self._senders.get(webhook_id)
        if sender is None:
            sender = self._senders[webhook_id] = EndpointSender(
                options.allow_private, options.concurrency, options.timeout_seconds
            )
        lease_ms = round(options.lease_seconds * 1000)
        in_flight: set[asyncio.Task[AttemptResult]] = set()
        finished: list[AttemptResult] = []  # recorded with the next claim
        try:
            while not self._stop.is_set():
                free = options.concurrency - len(in_flight)
                if free > 0:
                    settle, finished = finished, []
                    webhook, messages = await asyncio.to_thread(
                        self._store.claim_messages,
                        webhook_id,
                        self._clock(),
                        free,
                        lease_ms,
                        settle,
                    )
                    if webhook is None:  # deleted: nothing of it can fail any more
                        self._lane_recovered(webhook_id)
                        return
                    if settle:
                        self._lane_recovered(webhook_id)
                    if not messages and not in_flight:
                        return
                    for message in messages:
                        in_flight.add(asyncio.create_task(self._attempt(sender, webhook, message)))
                # Claim again as soon as an attempt ends, or after a poll period.
                done, in_flight = await asyncio.wait(
                    in_flight, timeout=POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                finished += self._results(done, webhook_id)
        except Exception as error:
            # Held messages whose attempts are not recorded are attempted again once
            # their leases run out (a repeat, never a loss).
            self._lane_failed(webhook_id, error)
            logger.warning("webhook lane %s failed: %s", webhook_id, describe(error))
        finally:
            if in_flight:
                done, _ = await asyncio.wait(in_flight)
                finished += self._results(done, webhook_id)
            if finished:
                await self._record(finished, webhook_id)

    def _results(
        self, done: set[asyncio.Task[AttemptResult]], webhook_id: str
    ) -> list[AttemptResult]:
        """The attempts that ended with a result. One that raised is logged and shown in
        the health, and its message is attempted again once its lease runs out (a
        repeat, never a loss), while the others' results are recorded."""
        results = []
        for task in done:
            if task.cancelled():
                continue
            failure = task.exception()
            if failure is None:
                results.append(task.result())
            else:
                self._lane_failed(webhook_id, failure)
                logger.warning("a webhook attempt on %s failed: %s", webhook_id, describe(failure))
        return results

    async def _record(self, results: list[AttemptResult], webhook_id: str) -> None:
        try:
            await asyncio.to_thread(self._store.record_attempts, results)
        except Exception as error:
            self._lane_failed(webhook_id, error)
            logger.warning("recording webhook attempts failed: %s", describe(error))
        else:
            self._lane_recovered(webhook_id)

    async def _attempt(
        self, sender: EndpointSender, webhook: WebhookRecord, message: OutgoingMessage
    ) -> AttemptResult:
        now = self._clock()
        sent = await sender.send(
            webhook.url, message.id, message.body.encode(), webhook.signing_secrets(now)
        )
        attempt = AttemptRecord(now, sent.status_code, sent.error, sent.duration_ms)
        outcome = outcome_of(sent.status_code)
        metrics.observe_webhook_attempt(outcome.value, sent.duration_ms / 1000)
        if outcome is Outcome.DELIVERED:
            return AttemptResult(message.id, attempt, "delivered")
        if outcome is Outcome.GONE:
            reason = f"the endpoint answered 410 Gone at {iso_from_ms(now)}"
            logger.warning("webhook %s disabled: %s", webhook.id, reason)
            return AttemptResult(message.id, attempt, "failed", disable_endpoint_because=reason)
        if outcome is Outcome.RETRY:
            delay = self._options.schedule.next_delay(
                message.attempts + 1, sent.retry_after_seconds
            )
            if delay is not None:
                return AttemptResult(message.id, attempt, "pending", now + round(delay * 1000))
        return AttemptResult(message.id, attempt, "failed")
