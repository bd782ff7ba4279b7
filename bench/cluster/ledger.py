"""What the client host sent with one scenario's key, and what it was answered and saw.

Times are ``time.monotonic()``: one clock for every thread (and process) of the machine.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class Attempt:
    batch: str
    node: int  # the API node asked
    attempt: int  # 1 for a batch's first request
    sent: float
    done: float
    status: int  # 0: no answer (refused, reset, timed out)
    reason: str = ""  # what a refusal said (its message), or the transport error


@dataclass
class Probe:
    email: str
    acknowledged: float
    visible: float | None = None  # when the profile API first showed it


@dataclass
class Ledger:
    tag: str  # in every batch id, event id and email of the scenario
    secret: str
    sizes: dict[str, int] = field(default_factory=dict)  # batch id -> events
    slots: dict[str, int] = field(default_factory=dict)  # batch id -> its marker's slot
    acknowledged: dict[str, float] = field(default_factory=dict)  # batch -> its first 202
    visible: dict[str, float] = field(default_factory=dict)  # batch -> first seen stored
    attempts: list[Attempt] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    closed: bool = False  # no new requests

    def acknowledged_ids(self) -> set[str]:
        return {f"{batch}.{i}" for batch in self.acknowledged for i in range(self.sizes[batch])}

    def add_batch(self, batch: str, size: int, slot: int | None = None) -> None:
        with self.lock:
            self.sizes[batch] = size
            if slot is not None:
                self.slots[batch] = slot

    def begin(self) -> bool:
        """Counts a request about to be sent; False when the ledger is closed."""
        with self.lock:
            if self.closed:
                return False
            self.in_flight += 1
            return True

    def end(self, attempt: Attempt) -> None:
        with self.lock:
            self.attempts.append(attempt)
            if attempt.status == 202:
                self.acknowledged.setdefault(attempt.batch, attempt.done)
            self.in_flight -= 1

    def release(self) -> None:
        """Ends what ``begin`` counted, without an answer to record."""
        with self.lock:
            self.in_flight -= 1

    def close(self) -> None:
        with self.lock:
            self.closed = True

    def unseen_by_slot(self) -> dict[int, set[str]]:
        """Acknowledged batches with a marker not seen stored yet, by the marker's slot."""
        with self.lock:
            unseen = [batch for batch in self.acknowledged if batch not in self.visible]
        by_slot: dict[int, set[str]] = {}
        for batch in unseen:
            if batch in self.slots:
                by_slot.setdefault(self.slots[batch], set()).add(batch)
        return by_slot
