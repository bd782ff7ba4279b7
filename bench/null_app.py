"""Ceiling (a): the same HTTP stack (Starlette on uvicorn with eventfold's protocol)
answering 202 {} without reading or storing anything."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def accept(request: Request) -> Response:
    await request.body()  # the bytes still cross the socket, as in eventfold
    return Response(b"{}", status_code=202, media_type="application/json")


app = Starlette(routes=[Route("/api/v0/events", accept, methods=["POST"])])


def main() -> None:
    """Serves this app on the port given as the only argument, as eventfold serves."""
    import sys

    import uvicorn

    from eventfold.http.protocol import BoundedHttpToolsProtocol

    uvicorn.run(
        "bench.null_app:app",
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http=BoundedHttpToolsProtocol,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
