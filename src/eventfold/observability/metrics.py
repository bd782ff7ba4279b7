"""Prometheus metrics. With ``--workers`` > 1 the CLI makes a folder for the processes'
metrics (EVENTFOLD_METRICS_DIR, and PROMETHEUS_MULTIPROC_DIR for prometheus-client)
before any server process imports this, and ``/metrics`` adds up all processes."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector

from eventfold.storage.base import FoldLag
from eventfold.storage.webhook_records import DeliveryBacklog

REQUESTS = Counter(
    "eventfold_http_requests",
    "HTTP requests by route, method and status",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "eventfold_http_request_duration_seconds",
    "HTTP request latency by route",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS_ACCEPTED = Counter("eventfold_events_accepted", "Events stored, by account", ["account"])
UPSERTS_ACCEPTED = Counter(
    "eventfold_profile_upserts_accepted", "Profile upserts stored, by account", ["account"]
)
EVENTS_REJECTED = Counter(
    "eventfold_events_rejected",
    "Events in rejected batches, by reason (batches that could not be read count 0)",
    ["reason"],
)
BATCHES_REJECTED = Counter("eventfold_batches_rejected", "Rejected batches, by reason", ["reason"])
BATCH_SIZE = Histogram(
    "eventfold_batch_size_events",
    "Events per accepted batch",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000),
)
COMMIT_JOBS = Histogram(
    "eventfold_group_commit_jobs",
    "Jobs (mostly request batches) committed in one transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
COMMIT_SECONDS = Histogram(
    "eventfold_group_commit_duration_seconds",
    "Time to run and commit (fsync) one group transaction",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)

FOLD_QUARANTINED = Counter(
    "eventfold_fold_quarantined", "Events the fold set aside because they could not be folded"
)

WEBHOOK_ATTEMPTS = Counter(
    "eventfold_webhook_attempts",
    "Webhook delivery attempts by outcome (delivered, retry, refused, gone)",
    ["outcome"],
)
WEBHOOK_ATTEMPT_SECONDS = Histogram(
    "eventfold_webhook_attempt_duration_seconds",
    "How long one webhook delivery attempt took",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def observe_webhook_attempt(outcome: str, seconds: float) -> None:
    WEBHOOK_ATTEMPTS.labels(outcome).inc()
    WEBHOOK_ATTEMPT_SECONDS.observe(seconds)


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    REQUESTS.labels(route, method, str(status)).inc()
    REQUEST_SECONDS.labels(route).observe(seconds)


def observe_accepted(account: str, events: int) -> None:
    EVENTS_ACCEPTED.labels(account).inc(events)
    BATCH_SIZE.observe(events)


def observe_upserts_accepted(account: str, upserts: int) -> None:
    UPSERTS_ACCEPTED.labels(account).inc(upserts)


def observe_rejected(reason: str, events: int) -> None:
    BATCHES_REJECTED.labels(reason).inc()
    if events:
        EVENTS_REJECTED.labels(reason).inc(events)


def observe_quarantined() -> None:
    FOLD_QUARANTINED.inc()


def observe_commit(jobs: int, seconds: float) -> None:
    COMMIT_JOBS.observe(jobs)
    COMMIT_SECONDS.observe(seconds)


class FoldLagCollector(Collector):
    """The fold's lag, read from the database (and log) when scraped (the same for every
    process)."""

    def __init__(self, lag: FoldLag) -> None:
        self._lag = lag

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lag = self._lag
        yield GaugeMetricFamily(
            "eventfold_fold_lag_events",
            "Accepted events not yet folded into profiles",
            value=lag.events,
        )
        yield GaugeMetricFamily(
            "eventfold_fold_lag_seconds",
            "How long the oldest unfolded event has waited",
            value=lag.seconds,
        )
        yield GaugeMetricFamily(
            "eventfold_fold_quarantined_events",
            "Events set aside now because they could not be folded (eventfold fold quarantine)",
            value=lag.quarantined,
        )


class SegmentTimerCollector(Collector):
    """How late the segments' timer is, read from the database when scraped."""

    def __init__(self, lag_seconds: float) -> None:
        self._lag_seconds = lag_seconds

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "eventfold_segment_timer_lag_seconds",
            "Seconds since the earliest due segment re-evaluation (a window that moved)"
            " that has not run yet",
            value=self._lag_seconds,
        )


class DeliveryBacklogCollector(Collector):
    """The webhooks' outbox, read from the database when scraped."""

    def __init__(self, backlog: DeliveryBacklog) -> None:
        self._backlog = backlog

    def collect(self) -> Iterator[GaugeMetricFamily]:
        backlog = self._backlog
        yield GaugeMetricFamily(
            "eventfold_webhook_pending_messages",
            "Webhook messages not delivered yet (due now or waiting for a retry)",
            value=backlog.pending,
        )
        yield GaugeMetricFamily(
            "eventfold_webhook_failed_messages",
            "Webhook messages whose retries ran out (listed for replay)",
            value=backlog.failed,
        )
        yield GaugeMetricFamily(
            "eventfold_webhook_lag_seconds",
            "How late the most overdue webhook message is",
            value=backlog.lag_seconds,
        )


def exposition(
    lag: FoldLag,
    multiprocess_dir: str,
    segment_timer_lag: float | None = None,
    deliveries: DeliveryBacklog | None = None,
) -> tuple[bytes, str]:
    """The text of ``/metrics`` and its content type: this process's metrics (or, with a
    multiprocess folder, every server process's), then the fold's lag and the webhooks'
    outbox."""
    if multiprocess_dir:
        process_registry = CollectorRegistry()
        MultiProcessCollector(process_registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
    else:
        process_registry = REGISTRY
    lag_registry = CollectorRegistry()
    lag_registry.register(FoldLagCollector(lag))
    if segment_timer_lag is not None:
        lag_registry.register(SegmentTimerCollector(segment_timer_lag))
    if deliveries is not None:
        lag_registry.register(DeliveryBacklogCollector(deliveries))
    return generate_latest(process_registry) + generate_latest(lag_registry), CONTENT_TYPE_LATEST
