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
from eventfold.http.events import post_events
from eventfold.settings import Settings


def create_app(services: Services, close_storage_on_shutdown: bool = False) -> Starlette:
    """The app over already-built services (tests build their own)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if close_storage_on_shutdown:
            services.storage.close()

    app = Starlette(
        routes=[Route("/api/v0/events", post_events, methods=["POST"])],
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
