"""Wires settings, storage and services together: the one place that builds them."""

from __future__ import annotations

from dataclasses import dataclass

from eventfold.domain.events import WireTypes
from eventfold.domain.upsert_validation import UpsertValidator
from eventfold.domain.upserts import UpsertTypes
from eventfold.domain.validation import BatchValidator
from eventfold.domain.webhook_retries import parse_schedule
from eventfold.fold_process import ChildSegmentLoops, FoldProcess
from eventfold.observability import metrics
from eventfold.services.auth import Authenticator
from eventfold.services.background import BackgroundWork, FoldLoop, SegmentLoopsRunner
from eventfold.services.debug_feed import DebugFeed, RejectionRing
from eventfold.services.fold_lag import FoldLagGauge
from eventfold.services.ingest import IngestService
from eventfold.services.profile_export import ProfileExport
from eventfold.services.profiles import ProfileService
from eventfold.services.segment_loops import SegmentLoops
from eventfold.services.segments import SegmentService
from eventfold.services.webhook_delivery import DeliveryLoop, DeliveryOptions
from eventfold.services.webhooks import WebhookService
from eventfold.settings import Settings
from eventfold.storage import open_log, open_storage
from eventfold.storage.base import EventLog, Storage
from eventfold.worker import fold_loops


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    storage: Storage
    log: EventLog  # where accepted batches go: the database itself, or JetStream
    authenticator: Authenticator
    ingest: IngestService
    profiles: ProfileService
    profile_export: ProfileExport
    fold_lag: FoldLagGauge
    # The log's connection and the fold loops this process runs beside the API.
    background: BackgroundWork
    webhooks: WebhookService
    wire_types: WireTypes  # the request types, for the OpenAPI document
    upsert_types: UpsertTypes  # the profile upserts' request types, likewise
    rejections: RejectionRing
    debug_feed: DebugFeed
    segments: SegmentService


def build_worker(settings: Settings, storage: Storage, deliveries: bool = True) -> BackgroundWork:
    """What ``eventfold worker`` runs: fold loops, from the database or the log (each
    log fold loop connects to the log itself), the segments' loops and (unless it is a
    server's fold process) webhook deliveries."""
    return BackgroundWork(
        storage,
        fold_loops(settings, storage),
        segment_loops(settings, storage),
        delivery_loop(settings, storage) if deliveries else None,
    )


def _server_background(
    settings: Settings, storage: Storage
) -> tuple[list[FoldLoop], SegmentLoopsRunner | None]:
    """The fold ``serve`` runs (none, a child process, or loops on threads of its own)
    and the segments' loops beside it (a child runs them itself; the server watches)."""
    if settings.folds_in_a_child:
        process = FoldProcess(settings)
        return [process], ChildSegmentLoops(process, storage)
    if settings.folds_on_a_thread:
        return list(fold_loops(settings, storage)), segment_loops(settings, storage)
    return [], None


def segment_loops(settings: Settings, storage: Storage) -> SegmentLoops:
    return SegmentLoops(
        storage,
        settings.segment_timer_seconds,
        int(settings.segment_change_retention_days * 86_400_000),
    )


def delivery_loop(settings: Settings, storage: Storage) -> DeliveryLoop:
    return DeliveryLoop(
        storage,
        DeliveryOptions(
            schedule=parse_schedule(settings.webhook_retry_seconds),
            allow_private=settings.webhooks_allow_private,
            concurrency=settings.webhook_concurrency,
            timeout_seconds=settings.webhook_timeout_seconds,
            lease_seconds=settings.webhook_lease_seconds,
        ),
    )


def build_services(settings: Settings, storage: Storage | None = None) -> Services:
    """Everything a server process needs; opens the database unless one is given."""
    storage = storage if storage is not None else open_storage(settings, metrics.observe_commit)
    validator = BatchValidator(settings.limits)
    upsert_validator = UpsertValidator(settings.limits, validator.types)
    rejections = RejectionRing()
    log = open_log(settings, storage)
    fold_lag = FoldLagGauge(log, settings.fold_lag_cache_seconds)
    folds, loops = _server_background(settings, storage)
    return Services(
        settings=settings,
        storage=storage,
        log=log,
        authenticator=Authenticator(storage, settings.key_cache_seconds),
        ingest=IngestService(
            log,
            validator,
            fold_lag,
            settings.idempotency_window_seconds,
            settings.max_fold_lag_events,
            settings.max_fold_lag_seconds,
            upsert_validator,
        ),
        profiles=ProfileService(storage, log, storage),
        profile_export=ProfileExport(storage),
        fold_lag=fold_lag,
        background=BackgroundWork(
            log,
            folds,
            loops,
            delivery_loop(settings, storage) if settings.deliver_in_server else None,
        ),
        webhooks=WebhookService(storage, settings.webhooks_allow_private),
        wire_types=validator.types,
        upsert_types=upsert_validator.types,
        rejections=rejections,
        debug_feed=DebugFeed(storage, rejections, storage),
        segments=SegmentService(storage, loops.wake if loops is not None else lambda: None),
    )
