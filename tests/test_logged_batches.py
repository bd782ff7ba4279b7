"""Applying batches read from an external log (``Storage.apply_logged``), on every
backend: a redelivered batch is skipped, erasure marks drop the batches logged before
the erasure, and a repeated Idempotency-Key is stored once."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping

import msgspec

from eventfold.clock import now_ms
from eventfold.domain.limits import Limits
from eventfold.domain.validation import BatchValidator
from eventfold.services.fold import fold_events, fold_everything
from eventfold.storage.base import IdempotencyClaim, LoggedBatch, Storage


def apply(storage: Storage, batches: list[LoggedBatch], forget_below: int) -> int:
    """Applies and folds the batches, as a log worker does."""
    return storage.apply_logged(batches, forget_below, fold_events)


_validator = BatchValidator(Limits())


def logged(position: int, account_id: int, *events: Mapping[str, object]) -> LoggedBatch:
    body = msgspec.json.encode({"events": list(events)})
    return LoggedBatch(position, account_id, now_ms(), _validator.validate(body, now_ms()))


def event_count(storage: Storage, account_id: int, email: str) -> int:
    found = storage.find_profile(account_id, "email", email)
    return 0 if found is None else found[1].event_count


def test_a_redelivered_batch_is_applied_once(storage: Storage, account_id: int) -> None:
    first = logged(1, account_id, {"action": "view", "email": "a@x.co"})
    second = logged(2, account_id, {"action": "view", "email": "a@x.co"})
    assert apply(storage, [first], forget_below=1) == 1
    assert apply(storage, [first, second], forget_below=1) == 1
    assert apply(storage, [second, second], forget_below=1) == 0
    assert event_count(storage, account_id, "a@x.co") == 2
    assert storage.count_events(account_id) == 2


def test_forgotten_positions_no_longer_count_as_applied(storage: Storage, account_id: int) -> None:
    batch = logged(5, account_id, {"action": "view", "email": "f@x.co"})
    apply(storage, [batch], forget_below=1)
    # The log says nothing below 6 can come back; a batch at 5 would be a new one.
    apply(storage, [], forget_below=6)
    apply(storage, [batch], forget_below=1)
    assert event_count(storage, account_id, "f@x.co") == 2


def test_erasure_drops_batches_logged_before_it_and_keeps_later_ones(
    storage: Storage, account_id: int
) -> None:
    linked = {"action": "view", "email": "gone@x.co", "phoneNumber": "+35988000111"}
    asyncio.run(
        storage.erase_person(account_id, "email", "gone@x.co", fold_everything, log_position=3)
    )
    apply(
        storage,
        [
            logged(2, account_id, linked),
            logged(3, account_id, {"action": "view", "phoneNumber": "+35988000111"}),
            logged(4, account_id, {"action": "back", "email": "gone@x.co"}),
        ],
        forget_below=1,
    )
    assert event_count(storage, account_id, "gone@x.co") == 1  # only the one after
    assert storage.find_profile(account_id, "phoneNumber", "+35988000111") is None
    assert storage.count_events(account_id) == 1


def test_erasure_marks_every_identifier_of_a_folded_person(
    storage: Storage, account_id: int
) -> None:
    linked = {"action": "view", "email": "p@x.co", "phoneNumber": "+35988000222"}
    apply(storage, [logged(1, account_id, linked)], forget_below=1)
    asyncio.run(
        storage.erase_person(account_id, "email", "p@x.co", fold_everything, log_position=2)
    )
    phone_only = {"action": "view", "phoneNumber": "+35988000222"}
    apply(storage, [logged(2, account_id, phone_only)], forget_below=1)
    assert storage.find_profile(account_id, "phoneNumber", "+35988000222") is None
    apply(storage, [logged(3, account_id, phone_only)], forget_below=1)
    assert storage.find_profile(account_id, "phoneNumber", "+35988000222") is not None


def test_a_repeated_idempotency_key_is_stored_once(storage: Storage, account_id: int) -> None:
    body_hash = hashlib.sha256(b"same body").digest()
    claim = IdempotencyClaim("key-1", body_hash, now_ms() - 60_000)
    event = {"action": "view", "email": "i@x.co"}
    batches = [
        LoggedBatch(b.position, b.account_id, b.received_at_ms, b.events, claim)
        for b in (logged(1, account_id, event), logged(2, account_id, event))
    ]
    apply(storage, batches, forget_below=1)
    assert event_count(storage, account_id, "i@x.co") == 1
    assert storage.idempotency_hash(account_id, "key-1") == body_hash
    assert storage.idempotency_hash(account_id, "key-2") is None
