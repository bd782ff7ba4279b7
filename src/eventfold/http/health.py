"""``/healthz``: the process is up, and how far the fold is behind."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from eventfold.bootstrap import Services
from eventfold.http.openapi import Health, Lag
from eventfold.http.responses import json_response


async def healthz(request: Request) -> Response:
    services: Services = request.app.state.services
    lag = services.profiles.lag()
    return json_response(Health("ok", Lag(lag.events, round(lag.seconds, 3))))
