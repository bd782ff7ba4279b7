"""The ASGI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eventfold.bootstrap import Services, build_services
from eventfold.errors import EventfoldError
from eventfold.garbage_collection import tune_for_the_fold
from eventfold.http import errors, segments
from eventfold.http.debugger import debugger_page, debugger_stream, reference_page
from eventfold.http.events import get_events, post_events
from eventfold.http.health import healthz, prometheus_metrics, readyz
from eventfold.http.middleware import RequestLogMiddleware
from eventfold.http.openapi import build_openapi
from eventfold.http.profiles import (
    delete_profile,
    export_profiles,
    get_profile,
    get_profile_by_id,
    post_profiles,
)
from eventfold.http.responses import json_response
from eventfold.http.webhooks import (
    WebhookEndpoint,
    WebhooksEndpoint,
    list_deliveries,
    replay,
    rotate_secret,
)
from eventfold.observability.logs import configure_logging
from eventfold.settings import Settings


class EventsEndpoint(HTTPEndpoint):
    """One endpoint per path, so that a 405 lists every method the path takes."""

    get = staticmethod(get_events)
    post = staticmethod(post_events)


class ProfilesEndpoint(HTTPEndpoint):
    get = staticmethod(get_profile)
    post = staticmethod(post_profiles)
    delete = staticmethod(delete_profile)


class SegmentsEndpoint(HTTPEndpoint):
    get = staticmethod(segments.list_segments)
    post = staticmethod(segments.create_segment)


class SegmentEndpoint(HTTPEndpoint):
    get = staticmethod(segments.get_segment)
    put = staticmethod(segments.replace_segment)
    delete = staticmethod(segments.delete_segment)


def create_app(services: Services, close_storage_on_shutdown: bool = False) -> Starlette:
    """The app over already-built services (tests build their own)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await services.background.start()
        yield
        await services.background.stop()
        if close_storage_on_shutdown:
            services.storage.close()

    app = Starlette(
        routes=[
            Route("/api/v0/events", EventsEndpoint),
            Route("/api/v0/profiles", ProfilesEndpoint),
            # Before /api/v0/profiles/{profile_id}, which "export" would match.
            Route("/api/v0/profiles/export", export_profiles, methods=["GET"]),
            Route("/api/v0/profiles/{profile_id}", get_profile_by_id, methods=["GET"]),
            Route("/api/v0/segments", SegmentsEndpoint),
            Route("/api/v0/segments/{key}", SegmentEndpoint),
            Route("/api/v0/segments/{key}/members", segments.segment_members, methods=["GET"]),
            Route("/api/v0/segments/{key}/changes", segments.segment_changes, methods=["GET"]),
            Route("/api/v0/webhooks", WebhooksEndpoint),
            Route("/api/v0/webhooks/{webhook_id}", WebhookEndpoint),
            Route("/api/v0/webhooks/{webhook_id}/secret", rotate_secret, methods=["POST"]),
            Route("/api/v0/webhooks/{webhook_id}/deliveries", list_deliveries, methods=["GET"]),
            Route("/api/v0/webhooks/{webhook_id}/replay", replay, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", prometheus_metrics, methods=["GET"]),
            Route("/debugger", debugger_page, methods=["GET"]),
            Route("/docs", reference_page, methods=["GET"]),
            Route("/api/v0/debugger/stream", debugger_stream, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ],
        exception_handlers={
            EventfoldError: errors.handle_eventfold_error,
            HTTPException: errors.handle_http_exception,
            Exception: errors.handle_unexpected_error,
        },
        lifespan=lifespan,
        middleware=[Middleware(RequestLogMiddleware)],
    )
    # "/api/v0/events/" is a 404 like any unknown path, not a redirect a client may not follow.
    app.router.redirect_slashes = False
    app.state.services = services
    return app


async def openapi(request: Request) -> Response:
    services: Services = request.app.state.services
    document = getattr(request.app.state, "openapi", None)
    if document is None:
        document = request.app.state.openapi = build_openapi(
            services.wire_types,
            services.settings.limits.max_events_per_batch,
            services.upsert_types,
        )
    return json_response(document)


def create_app_from_environment() -> Starlette:
    """The factory uvicorn imports in every worker process (settings come from the env)."""
    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.verbose)
    app = create_app(build_services(settings), close_storage_on_shutdown=True)
    tune_for_the_fold()
    return app
