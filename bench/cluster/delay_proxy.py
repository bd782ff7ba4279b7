"""A TCP forwarder that can hold every byte back for a while: the slow link between an
API node and the NATS cluster (this kernel has no netem). It runs on the WAN host:

    python -m bench.cluster.delay_proxy --delay-ms 200 \\
        10.231.0.41:4222=10.231.0.11:4222 10.231.0.41:4223=10.231.0.12:4222 ...

It starts without delay; SIGUSR1 turns the delay on, SIGUSR2 off. With the delay on,
each chunk read from one side is written to the other ``delay`` later, in order, in
both directions (so a round trip takes twice the delay longer).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

CHUNK = 65_536
QUEUED_CHUNKS = 256  # then reading stops until the other side catches up


class Link:
    def __init__(self, delay: float) -> None:
        self.configured = delay
        self.delay = 0.0


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: Link) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUED_CHUNKS)

    async def forward() -> None:
        while True:
            due, chunk = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not chunk:
                return
            writer.write(chunk)
            await writer.drain()

    forwarding = asyncio.create_task(forward())
    try:
        while chunk := await reader.read(CHUNK):
            await queue.put((loop.time() + link.delay, chunk))
        await queue.put((loop.time() + link.delay, b""))
        await forwarding
    finally:
        forwarding.cancel()
        writer.close()


async def _serve_connection(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    target: tuple[str, int],
    link: Link,
) -> None:
    try:
        server_reader, server_writer = await asyncio.wait_for(asyncio.open_connection(*target), 5)
    except (OSError, TimeoutError):
        client_writer.close()
        return
    pumps = [
        asyncio.create_task(_pump(client_reader, server_writer, link)),
        asyncio.create_task(_pump(server_reader, client_writer, link)),
    ]
    # When either side ends, the connection ends (as when a cable is pulled).
    done, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    for task in (*done, *pending):
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await task


async def serve(routes: list[tuple[tuple[str, int], tuple[str, int]]], link: Link) -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, lambda: setattr(link, "delay", link.configured))
    loop.add_signal_handler(signal.SIGUSR2, lambda: setattr(link, "delay", 0.0))
    servers = []
    for (host, port), target in routes:

        async def handle(
            reader: asyncio.StreamReader,
            writer: asyncio.StreamWriter,
            target: tuple[str, int] = target,
        ) -> None:
            await _serve_connection(reader, writer, target, link)

        servers.append(await asyncio.start_server(handle, host, port))
    print("forwarding", " ".join(f"{a}:{b}={c}:{d}" for (a, b), (c, d) in routes), flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", type=float, required=True)
    parser.add_argument("routes", nargs="+", metavar="LISTEN=TARGET")
    args = parser.parse_args()
    routes = [
        (_address(listen), _address(target))
        for listen, target in (route.split("=") for route in args.routes)
    ]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(routes, Link(args.delay_ms / 1000)))


if __name__ == "__main__":
    main()
