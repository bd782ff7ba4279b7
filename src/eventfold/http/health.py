"""``/healthz`` (the process is up), ``/readyz`` (it can do its work), ``/metrics``."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from eventfold.bootstrap import Services
from eventfold.clock import now_ms
from eventfold.errors import RetryLater
from eventfold.http.openapi import (
    Deliveries,
    DeliveryLoopHealth,
    FoldLoop,
    Health,
    Lag,
    Readiness,
    SegmentLoopsView,
)
from eventfold.http.responses import json_response
from eventfold.observability import metrics
from eventfold.storage.base import FoldLag

# /readyz fails when this process's fold loop has failed for longer than this.
FOLD_STALLED_SECONDS = 5.0


def _fold_loop(services: Services) -> FoldLoop | None:
    health = services.background.fold_health()
    if health is None:
        return None
    return FoldLoop(health.running, round(health.failing_for_seconds, 3), health.last_error)


def _segments(services: Services) -> SegmentLoopsView | None:
    """The segment loops this process runs, or those of its fold's child process (as it
    reports them), with the timer's lag read from the database."""
    loops = services.background.segments
    if loops is None:
        return None
    health = loops.health()
    lag = None if health.timer_lag_seconds is None else round(health.timer_lag_seconds, 3)
    state = health.loops
    return SegmentLoopsView(
        state.running, round(state.failing_for_seconds, 3), state.last_error, lag
    )


def _lag(lag: FoldLag) -> Lag:
    return Lag(lag.events, round(lag.seconds, 3), lag.quarantined)


async def _deliveries(services: Services) -> Deliveries:
    """The webhooks' outbox (null counts when the database cannot tell them) and this
    process's delivery loop (null when it runs none)."""
    health = services.background.delivery_health()
    loop = None
    if health is not None:
        loop = DeliveryLoopHealth(health.running, round(health.failing_for(), 3), health.last_error)
    try:
        backlog = await run_in_threadpool(services.storage.delivery_backlog, now_ms())
    except RetryLater:
        return Deliveries(None, None, None, loop)
    return Deliveries(backlog.pending, backlog.failed, round(backlog.lag_seconds, 3), loop)


async def healthz(request: Request) -> Response:
    """200 while the process runs; the lag is null when the database cannot tell it."""
    services: Services = request.app.state.services
    fold = await run_in_threadpool(_fold_loop, services)  # may read the child's report
    segments = await run_in_threadpool(_segments, services)
    deliveries = await _deliveries(services)
    try:
        lag = await services.fold_lag.current()
    except RetryLater:
        return json_response(Health("ok", None, fold, segments, deliveries))
    return json_response(Health("ok", _lag(lag), fold, segments, deliveries))


async def readyz(request: Request) -> Response:
    """Ready when the database answers and the fold is within its lag bound."""
    services: Services = request.app.state.services
    bound = services.settings.ready_max_lag_seconds
    try:
        lag = await services.fold_lag.current()
    except Exception as error:
        return json_response(
            Readiness(
                "not ready",
                database=f"unreachable: {type(error).__name__}",
                lag=None,
                message="the database does not answer",
            ),
            503,
        )
    shown = _lag(lag)
    fold = await run_in_threadpool(_fold_loop, services)  # may read the child's report
    if fold is not None and (not fold.running or fold.failingForSeconds > FOLD_STALLED_SECONDS):
        state = "stopped" if not fold.running else f"failing for {fold.failingForSeconds:.1f} s"
        return json_response(
            Readiness(
                "not ready",
                database="ok",
                lag=shown,
                message=f"the fold loop is {state} ({fold.lastError})",
            ),
            503,
        )
    if lag.seconds > bound:
        return json_response(
            Readiness(
                "not ready",
                database="ok",
                lag=shown,
                message=f"the fold is {lag.seconds:.1f} s behind (bound {bound:g} s)",
            ),
            503,
        )
    return json_response(Readiness("ready", database="ok", lag=shown, message=""))


async def prometheus_metrics(request: Request) -> Response:
    services: Services = request.app.state.services
    segments = await run_in_threadpool(_segments, services)
    backlog = await run_in_threadpool(services.storage.delivery_backlog, now_ms())
    body, content_type = metrics.exposition(
        await services.fold_lag.current(),
        services.settings.metrics_dir,
        segments.timerLagSeconds if segments is not None else None,
        backlog,
    )
    return Response(body, media_type=content_type)
