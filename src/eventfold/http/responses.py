"""JSON responses encoded with msgspec (faster than the standard library's json)."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response

_encoder = msgspec.json.Encoder()


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(
        _encoder.encode(content), status_code=status_code, media_type="application/json"
    )
