"""``/healthz``: the process is up, and how far the fold is behind."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from eventfold.bootstrap import Services
from eventfold.http.responses import json_response


async def healthz(request: Request) -> Response:
    services: Services = request.app.state.services
    lag = services.profiles.lag()
    return json_response(
        {"status": "ok", "lag": {"events": lag.events, "seconds": round(lag.seconds, 3)}}
    )
