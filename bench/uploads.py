"""python -m bench.uploads: many large uploads at once. Every client must read an HTTP
answer (202, 413 or 503), never a reset, and the server's memory must stay bounded.

    python -m bench.uploads                       # 200 uploads of ~9 MiB at once
    python -m bench.uploads --uploads 40 --max-concurrent-requests 4

Each upload is one request from its own thread with Python's http.client, which sends
its whole body before reading the answer (no ``Expect: 100-continue``): the client that
lingering close exists for. Every tenth body is over the 10 MiB limit, to see its 413.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.batches import realistic_event
from bench.processes import create_key, free_port, start_server

MIB = 1024 * 1024
UPLOAD_BYTES = 9 * MIB
OVERSIZED_BYTES = 10 * MIB + MIB // 2
NOTE_CHARS = 1_800  # ~2.1 KB an event: a 9 MiB batch stays under 5,000 events


@dataclass
class UploadRun:
    statuses: Counter[int] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)  # of the answers other than 202
    errors: list[str] = field(default_factory=list)  # resets, timeouts, answers not JSON
    baseline_rss_mb: float = 0.0
    sampled_rss_mb: float = 0.0  # the largest VmRSS seen, sampled every 50 ms
    peak_rss_mb: float = 0.0  # VmHWM: the server's high-water mark over the whole run
    seconds: float = 0.0


def upload_body(size: int, seed: int = 1) -> bytes:
    """A valid batch of realistic events, each with a long custom string, of about
    ``size`` bytes."""
    rng = random.Random(seed)
    note = {"key": "note", "values": ["n" * NOTE_CHARS]}
    events: list[bytes] = []
    total = len(b'{"events": []}')
    while True:
        event = realistic_event(rng)
        event["custom"]["string"].append(note)
        encoded = json.dumps(event).encode()
        if total + len(encoded) + 2 > size:
            return b'{"events": [' + b", ".join(events) + b"]}"
        events.append(encoded)
        total += len(encoded) + 2


def run_uploads(
    uploads: int,
    max_concurrent_requests: int | None = None,
    size: int = UPLOAD_BYTES,
    oversized_every: int = 10,
    timeout: float = 300,
) -> UploadRun:
    """Starts a server on a fresh SQLite file, sends ``uploads`` uploads at once and
    samples the server's memory while they run."""
    body = upload_body(size)
    # Whitespace after the JSON: still a batch, but over the limit by its Content-Length.
    oversized = body + b" " * (OVERSIZED_BYTES - len(body))
    env = {}
    if max_concurrent_requests is not None:
        env["EVENTFOLD_MAX_CONCURRENT_REQUESTS"] = str(max_concurrent_requests)
    run = UploadRun()
    with tempfile.TemporaryDirectory(prefix="eventfold-uploads-") as folder:
        database_url = f"sqlite:///{Path(folder) / 'uploads.db'}"
        secret = create_key(database_url)
        port = free_port()
        server = start_server(database_url, port, env)
        try:
            run.baseline_rss_mb = _memory_mb(server.pid, "VmRSS")
            start = threading.Barrier(uploads + 1)
            lock = threading.Lock()

            def upload(number: int) -> None:
                sent = oversized if oversized_every and number % oversized_every == 0 else body
                start.wait()
                outcome = _post(port, secret, sent, timeout)
                with lock:
                    if isinstance(outcome, tuple):
                        run.statuses[outcome[0]] += 1
                        if outcome[0] != 202:
                            run.messages[f"{outcome[0]} {outcome[1]}"] += 1
                    else:
                        run.errors.append(outcome)

            threads = [threading.Thread(target=upload, args=(n,)) for n in range(uploads)]
            for thread in threads:
                thread.start()
            start.wait()
            started = time.monotonic()
            while any(thread.is_alive() for thread in threads):
                run.sampled_rss_mb = max(run.sampled_rss_mb, _memory_mb(server.pid, "VmRSS"))
                time.sleep(0.05)
            run.seconds = time.monotonic() - started
            run.peak_rss_mb = _memory_mb(server.pid, "VmHWM")
        finally:
            _stop(server)
    return run


def _post(port: int, secret: str, body: bytes, timeout: float) -> tuple[int, str] | str:
    """The answer's status and message, or what went wrong instead of an answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(
            "POST",
            "/api/v0/events",
            body=body,
            headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        answer = json.loads(response.read())
        message = answer.get("message", "")
        if response.status != 202 and not isinstance(message, str):
            return f"{response.status} without a JSON message: {answer!r:.100}"
        if response.status == 503 and not response.getheader("Retry-After"):
            return "503 without Retry-After"
        return response.status, message
    except (OSError, http.client.HTTPException, ValueError) as error:
        return f"{type(error).__name__}: {error}"
    finally:
        connection.close()


def _memory_mb(pid: int, line: str) -> float:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith(line + ":"):
            return int(row.split()[1]) / 1024
    raise RuntimeError(f"no {line} for process {pid}")


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=200, help="uploads sent at once")
    parser.add_argument("--mib", type=float, default=9, help="size of each upload in MiB")
    parser.add_argument(
        "--max-concurrent-requests",
        type=int,
        help="the server's EVENTFOLD_MAX_CONCURRENT_REQUESTS (default: eventfold's)",
    )
    parser.add_argument(
        "--oversized-every", type=int, default=10, help="every Nth body is over 10 MiB (0: none)"
    )
    args = parser.parse_args()
    run = run_uploads(
        args.uploads, args.max_concurrent_requests, int(args.mib * MIB), args.oversized_every
    )
    print(f"{args.uploads} uploads of {args.mib:g} MiB at once in {run.seconds:.1f} s")
    for status in (202, 413, 503):
        print(f"  {status}: {run.statuses.pop(status, 0)}")
    for status, count in sorted(run.statuses.items()):
        print(f"  {status}: {count}")
    print(f"  resets/errors: {len(run.errors)}")
    for message, count in run.messages.most_common():
        print(f"    {count} x {message}")
    for error in Counter(run.errors).most_common(5):
        print(f"    {error[1]} x {error[0]}")
    print(
        f"server RSS: {run.baseline_rss_mb:.0f} MB idle, {run.sampled_rss_mb:.0f} MB largest "
        f"sample, peak (VmHWM) {run.peak_rss_mb:.0f} MB"
    )
    if run.errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
