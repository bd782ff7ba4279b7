"""When each acknowledged batch of the load became visible through the API.

The probe measures the freshness of its own events only; a batch that a fault holds
back (delivered to a worker or through a NATS node that died, say) would go unseen by
it. So every load batch starts with a *marker* event for a person shared by the batches
made in the same second (its slot), and a watcher asks the event listing for each slot
that still has acknowledged batches it has not seen stored (``GET /api/v0/events?email=``):
one request per second of backlog, whatever the rate. With eventfold's workers a batch
is stored and folded in one transaction, so stored means in its profile.
"""

from __future__ import annotations

import threading
import time

import httpx2

from bench.cluster.ledger import Ledger

SLOT_SECONDS = 1.0
ROUND_SECONDS = 0.5


def marker_email(tag: str, slot: int) -> str:
    return f"slot-{slot}@{tag}.cluster.test"


class VisibilityWatcher:
    """Fills ``Ledger.visible`` for the ledgers it watches, every ROUND_SECONDS."""

    def __init__(self, urls: list[str]) -> None:
        self._urls = urls
        self._ledgers: list[Ledger] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def watch(self, ledger: Ledger) -> None:
        self._ledgers = [*self._ledgers, ledger]

    def forget(self, ledger: Ledger) -> None:
        self._ledgers = [known for known in self._ledgers if known is not ledger]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        turn = 0
        with httpx2.Client(timeout=5) as http:
            while not self._stop.wait(ROUND_SECONDS):
                for ledger in self._ledgers:
                    for slot, batches in sorted(ledger.unseen_by_slot().items()):
                        turn += 1
                        seen = self._stored_markers(http, ledger, slot, turn)
                        now = time.monotonic()
                        with ledger.lock:
                            for batch in batches & seen:
                                ledger.visible[batch] = now

    def _stored_markers(
        self, http: httpx2.Client, ledger: Ledger, slot: int, turn: int
    ) -> set[str]:
        """The batches whose marker of ``slot`` is stored and folded (ask the API nodes
        in turn; an empty set when the one asked does not answer)."""
        try:
            answer = http.get(
                f"{self._urls[turn % len(self._urls)]}/api/v0/events",
                params={"email": marker_email(ledger.tag, slot), "limit": 1000},
                headers={"Authorization": f"Bearer {ledger.secret}"},
            )
        except httpx2.TransportError:
            return set()
        if answer.status_code != 200:
            return set()
        return {
            event["n"].rpartition(".")[0]
            for event in answer.json()["events"]
            if event["foldedIntoProfile"] is not None
        }
