"""Sending one message to one endpoint over HTTP (httpx2): signed headers, a total
timeout, and the address check at connection time.

The address a host name resolves to is checked when connecting, not only when the URL
is saved (a name can be pointed at 127.0.0.1 afterwards): the connection pool's network
backend resolves the name itself, refuses private, loopback and link-local addresses,
and connects to the address it checked (TLS still verifies the name).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass

import httpcore2
import httpx2

from eventfold.domain.webhook_retries import parse_retry_after
from eventfold.domain.webhook_signing import signature_header
from eventfold.services.webhooks import refusal_of_target

USER_AGENT = "eventfold-webhooks/1"
_MAX_ERROR_CHARS = 300


class RefusedAddress(Exception):
    """The endpoint's host resolves to an address webhooks may not reach."""


@dataclass(frozen=True, slots=True)
class SendResult:
    status_code: int | None  # None: no answer (error says why)
    error: str | None
    duration_ms: int
    retry_after_seconds: float | None = None


class PublicAddressesOnly(httpcore2.AsyncNetworkBackend):
    """Connects only to hosts whose every address is public (unless private ones are
    allowed), and to the address it checked."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = httpcore2.AnyIOBackend()
        self._allow_private = allow_private

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = sorted({str(info[4][0]) for info in infos})
        if not self._allow_private:
            refusal = refusal_of_target(host, addresses)
            if refusal is not None:
                raise RefusedAddress(refusal)
        return await self._inner.connect_tcp(
            str(infos[0][4][0]),
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class EndpointSender:
    """One endpoint's HTTP client: its own connection pool, so a dead endpoint holds
    only its own connections."""

    def __init__(self, allow_private: bool, concurrency: int, timeout_seconds: float) -> None:
        transport = httpx2.AsyncHTTPTransport()
        # httpx takes no network backend, so its pool is replaced by one that checks
        # addresses (the same options it would have used).
        transport._pool = httpcore2.AsyncConnectionPool(
            ssl_context=httpx2.create_ssl_context(),
            max_connections=concurrency,
            max_keepalive_connections=concurrency,
            keepalive_expiry=30.0,
            network_backend=PublicAddressesOnly(allow_private),
        )
        self._client = httpx2.AsyncClient(
            transport=transport, timeout=timeout_seconds, follow_redirects=False
        )
        self._timeout = timeout_seconds

    async def send(self, url: str, message_id: str, body: bytes, secrets: list[str]) -> SendResult:
        """One attempt; never raises for what the endpoint or the network does."""
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(secrets, message_id, timestamp, body),
        }
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._client.post(url, content=body, headers=headers)
                await response.aread()
        except TimeoutError:
            return self._failed(started, f"no answer within {self._timeout:g} s")
        except RefusedAddress as error:
            return self._failed(started, f"refused: {error}")
        # The network's failures, and a URL the client cannot encode (InvalidURL, or a
        # ValueError from IDNA): each a failed attempt, retried on the schedule.
        except (httpx2.HTTPError, OSError, httpx2.InvalidURL, ValueError) as error:
            return self._failed(started, f"{type(error).__name__}: {error}")
        retry_after = None
        if response.status_code in (429, 503):
            retry_after = parse_retry_after(response.headers.get("retry-after"), time.time())
        return SendResult(response.status_code, None, _elapsed_ms(started), retry_after)

    def _failed(self, started: float, error: str) -> SendResult:
        return SendResult(None, error[:_MAX_ERROR_CHARS], _elapsed_ms(started))

    async def close(self) -> None:
        await self._client.aclose()


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
