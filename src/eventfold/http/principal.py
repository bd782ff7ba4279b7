"""Who is asking: the key's principal, also noted for the request's log line."""

from __future__ import annotations

from starlette.requests import Request

from eventfold.bootstrap import Services
from eventfold.storage.base import Principal


async def authenticate(request: Request) -> Principal:
    services: Services = request.app.state.services
    principal = await services.authenticator.authenticate(request.headers.get("authorization"))
    request.state.account = principal.account_name
    return principal
