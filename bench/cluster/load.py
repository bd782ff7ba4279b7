"""The load generator and the freshness probe, run on the client host for the whole run.

Client threads post 100-event batches at a steady pace, each to its own API node, every
batch with an ``Idempotency-Key``. Only a 202 counts as acknowledged; a 503, a 429, a
5xx or no answer at all is retried with the same key after ``Retry-After`` on the other
API node (as a load balancer would), until it is answered 202 or its scenario ends.
Beside them a probe posts one event for a new person at a time and polls the profile
API until it shows it: the event's freshness.

Everything is written into the current scenario's :class:`Ledger`; :meth:`Load.switch`
moves the load to the next scenario's account without pausing it.
"""

from __future__ import annotations

import json
import random
import threading
import time

import httpx2

from bench.batches import realistic_event
from bench.cluster.ledger import Attempt, Ledger, Probe
from bench.cluster.visibility import SLOT_SECONDS, marker_email

BATCH_EVENTS = 100
PEOPLE = 200
PROBE_INTERVAL_SECONDS = 0.25
POLL_SECONDS = 0.05
# A probe event not in its profile this long after its 202 is reported as this late.
MISSING_AFTER_SECONDS = 60.0
MAX_RETRY_WAIT_SECONDS = 5.0
REQUEST_TIMEOUT_SECONDS = 30.0
RETRIED = {0, 429, 500, 502, 503, 504}  # 0: no answer (refused, reset, timed out)


class Load:
    def __init__(self, urls: list[str], rate: float, clients: int = 6, seed: int = 1) -> None:
        self.urls = urls
        self._period = clients * BATCH_EVENTS / rate  # between one client's batches
        self._seed = seed
        self._ledger: Ledger | None = None
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(clients)
        ]
        self._threads.append(threading.Thread(target=self._probe, daemon=True))
        for thread in self._threads:
            thread.start()

    def switch(self, ledger: Ledger | None) -> None:
        """From now on new batches go to ``ledger``'s account; the previous ledger is
        closed (its unanswered batches are abandoned, not retried)."""
        previous, self._ledger = self._ledger, ledger
        if previous is not None:
            previous.close()

    def drain(self, ledger: Ledger, timeout: float = 2 * MISSING_AFTER_SECONDS) -> None:
        """Waits until no request of ``ledger`` is in flight (and its probe is seen)."""
        deadline = time.monotonic() + timeout
        while ledger.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self, timeout: float = 5) -> None:
        self.switch(None)
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    # --- the clients ------------------------------------------------------------------

    def _client(self, number: int) -> None:
        rng = random.Random(self._seed * 1000 + number)
        home = number % len(self.urls)
        next_at = time.monotonic() + rng.uniform(0, self._period)
        sequence = 0
        retry: tuple[Ledger, str, bytes, int, int] | None = None
        with httpx2.Client(timeout=REQUEST_TIMEOUT_SECONDS) as http:
            while not self._stop.is_set():
                ledger = self._ledger
                if retry is not None and retry[0] is ledger:
                    _, batch, body, node, attempt = retry
                elif ledger is None:
                    self._stop.wait(0.05)
                    continue
                else:
                    if self._stop.wait(max(0.0, next_at - time.monotonic())):
                        return
                    # After a stall, go on at the pace, without a burst to catch up.
                    next_at = max(next_at + self._period, time.monotonic())
                    sequence += 1
                    batch = f"{ledger.tag}-c{number}-{sequence}"
                    slot = int(time.monotonic() // SLOT_SECONDS)
                    body = _batch_body(rng, ledger.tag, batch, slot)
                    ledger.add_batch(batch, BATCH_EVENTS, slot)
                    node, attempt = home, 1
                answer = self._post(http, ledger, batch, body, node, attempt)
                retry = None
                if answer is not None and answer[0] in RETRIED:
                    retry = (ledger, batch, body, (node + 1) % len(self.urls), attempt + 1)
                    self._stop.wait(min(answer[1], MAX_RETRY_WAIT_SECONDS))

    def _post(
        self,
        http: httpx2.Client,
        ledger: Ledger,
        batch: str,
        body: bytes,
        node: int,
        attempt: int,
    ) -> tuple[int, float] | None:
        """POSTs the batch; (status, seconds to wait before a retry), or None when the
        ledger is closed."""
        if not ledger.begin():
            return None
        sent = time.monotonic()
        status, wait, reason = 0, 1.0, ""
        try:
            answer = http.post(
                f"{self.urls[node]}/api/v0/events",
                content=body,
                headers={
                    "Authorization": f"Bearer {ledger.secret}",
                    "Content-Type": "application/json",
                    "Idempotency-Key": batch,
                },
            )
            status = answer.status_code
            wait = float(answer.headers.get("Retry-After", "1"))
            if status != 202:
                reason = _message(answer)
        except httpx2.TransportError as error:
            reason = type(error).__name__
        finally:
            ledger.end(Attempt(batch, node, attempt, sent, time.monotonic(), status, reason))
        return status, wait

    # --- the probe --------------------------------------------------------------------

    def _probe(self) -> None:
        sequence = 0
        node = 0
        with httpx2.Client(timeout=REQUEST_TIMEOUT_SECONDS) as http:
            while not self._stop.wait(PROBE_INTERVAL_SECONDS):
                ledger = self._ledger
                if ledger is None:
                    continue
                sequence += 1
                batch = f"{ledger.tag}-probe-{sequence}"
                email = f"probe-{sequence}@{ledger.tag}.cluster.test"
                body = json.dumps(
                    {"events": [{"action": "probe", "email": email, "n": f"{batch}.0"}]}
                ).encode()
                ledger.add_batch(batch, 1)
                if not ledger.begin():  # held until the probe is seen: draining waits
                    continue
                try:
                    acknowledged = self._post_until_acknowledged(http, ledger, batch, body, node)
                    node = (node + 1) % len(self.urls)
                    if acknowledged is not None:
                        probe = Probe(email, acknowledged)
                        ledger.probes.append(probe)
                        probe.visible = self._poll_profile(http, ledger, email, acknowledged)
                finally:
                    ledger.release()

    def _post_until_acknowledged(
        self, http: httpx2.Client, ledger: Ledger, batch: str, body: bytes, node: int
    ) -> float | None:
        attempt = 1
        while not self._stop.is_set():
            answer = self._post(http, ledger, batch, body, node, attempt)
            if answer is None or answer[0] not in RETRIED:
                return time.monotonic() if answer is not None and answer[0] == 202 else None
            node, attempt = (node + 1) % len(self.urls), attempt + 1
            self._stop.wait(min(answer[1], MAX_RETRY_WAIT_SECONDS))
        return None

    def _poll_profile(
        self, http: httpx2.Client, ledger: Ledger, email: str, acknowledged: float
    ) -> float | None:
        """When the profile API first showed the person (asking each API node in turn)."""
        node = 0
        while time.monotonic() - acknowledged < MISSING_AFTER_SECONDS:
            try:
                answer = http.get(
                    f"{self.urls[node]}/api/v0/profiles",
                    params={"email": email},
                    headers={"Authorization": f"Bearer {ledger.secret}"},
                    timeout=5,
                )
                if answer.status_code == 200:
                    return time.monotonic()
            except httpx2.TransportError:
                pass
            node = (node + 1) % len(self.urls)
            if self._stop.wait(POLL_SECONDS):
                return None
        return None


def _batch_body(rng: random.Random, tag: str, batch: str, slot: int) -> bytes:
    """A marker event (for the visibility watcher), then realistic events
    (bench/batches.py), each naming its person by email and carrying its own id in
    ``n``, which the read-back finds them by."""
    events: list[dict[str, object]] = [
        {"action": "marker", "email": marker_email(tag, slot), "n": f"{batch}.0"}
    ]
    for i in range(1, BATCH_EVENTS):
        event = realistic_event(rng)
        event.pop("phoneNumber", None)
        event["email"] = f"p{rng.randrange(PEOPLE)}@{tag}.cluster.test"
        event["n"] = f"{batch}.{i}"
        events.append(event)
    return json.dumps({"events": events}).encode()


def _message(answer: httpx2.Response) -> str:
    try:
        return str(answer.json()["message"])
    except (ValueError, KeyError, TypeError):
        return answer.text[:200]
