"""The ASGI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route

from eventfold.bootstrap import Services, build_services
from eventfold.errors import EventfoldError
from eventfold.http import errors
from eventfold.http.events import get_events, post_events
from eventfold.http.health import healthz
from eventfold.http.profiles import delete_profile, get_profile
from eventfold.settings import Settings
from eventfold.worker import FoldWorker


def create_app(services: Services, close_storage_on_shutdown: bool = False) -> Starlette:
    """The app over already-built services (tests build their own)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        worker = FoldWorker(services.storage) if services.settings.fold_in_server else None
        if worker is not None:
            worker.start()
        yield
        if worker is not None:
            worker.stop()
        if close_storage_on_shutdown:
            services.storage.close()

    app = Starlette(
        routes=[
            Route("/api/v0/events", post_events, methods=["POST"]),
            Route("/api/v0/events", get_events, methods=["GET"]),
            Route("/api/v0/profiles", get_profile, methods=["GET"]),
            Route("/api/v0/profiles", delete_profile, methods=["DELETE"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        exception_handlers={
            EventfoldError: errors.handle_eventfold_error,
            HTTPException: errors.handle_http_exception,
            Exception: errors.handle_unexpected_error,
        },
        lifespan=lifespan,
    )
    app.state.services = services
    return app


def create_app_from_environment() -> Starlette:
    """The factory uvicorn imports in every worker process (settings come from the env)."""
    return create_app(build_services(Settings.from_env()), close_storage_on_shutdown=True)
