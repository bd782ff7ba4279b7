"""Reading a JSON request body within the size limit, gzip included.

The limit counts decompressed bytes, and a gzip stream is never inflated past it, so a
small "zip bomb" costs at most ``max_bytes`` of memory.
"""

from __future__ import annotations

import asyncio
import zlib

from starlette.requests import Request

from eventfold.errors import (
    InvalidRequest,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)

_GZIP_WINDOW = 16 + zlib.MAX_WBITS


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the body is larger than {max_bytes} bytes (counted after decompression); "
        "send fewer events per request"
    )


def check_json_content_type(request: Request) -> bool:
    """Raises unless the body is JSON; returns whether it is gzip-compressed."""
    content_type = request.headers.get("content-type", "")
    if content_type.partition(";")[0].strip().lower() != "application/json":
        shown = repr(content_type) if content_type else "no Content-Type"
        raise UnsupportedMediaType(
            f"the body must be JSON: send 'Content-Type: application/json' (got {shown})"
        )
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", ""):
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported; send 'gzip' or no encoding"
        )
    return encoding == "gzip"


async def read_body(
    request: Request, max_bytes: int, gzipped: bool, timeout_seconds: float
) -> bytes:
    """The whole (decompressed) body; raises PayloadTooLarge past ``max_bytes`` and
    RequestTimeout when it takes longer than ``timeout_seconds`` to arrive."""
    try:
        async with asyncio.timeout(timeout_seconds):
            return await _read_body(request, max_bytes, gzipped)
    except TimeoutError:
        raise RequestTimeout(
            f"the body did not arrive within {timeout_seconds:g} seconds; send it faster or "
            "in smaller batches"
        ) from None


async def _read_body(request: Request, max_bytes: int, gzipped: bool) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    received = 0
    chunks: list[bytes] = []
    inflater = zlib.decompressobj(_GZIP_WINDOW) if gzipped else None
    size = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise _too_large(max_bytes)
        if inflater is not None:
            try:
                chunk = inflater.decompress(chunk, max_bytes + 1 - size)
            except zlib.error:
                raise InvalidRequest(
                    "the body is not valid gzip; compress it with gzip or drop the "
                    "Content-Encoding header"
                ) from None
            if inflater.unconsumed_tail:
                raise _too_large(max_bytes)
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    if inflater is not None and (not inflater.eof or inflater.unused_data):
        raise InvalidRequest(
            "the gzip body is truncated or followed by extra data; send one complete gzip stream"
        )
    return b"".join(chunks)
