"""The hand-off of validated events from the request path to a fold in the same process
(storage/decoded_batches.py): the fold reads them exactly as it would read the events
decoded from their stored documents, and a batch it does not hold is read from its record."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventfold.clock import now_ms
from eventfold.domain.fold_input import FoldInput, identifiers_of
from eventfold.domain.keys import hash_secret
from eventfold.domain.limits import Limits
from eventfold.domain.profile import state_of_event
from eventfold.domain.segments.evaluate import event_values
from eventfold.domain.validation import MAX_HANDED_OVER_BODY_BYTES, BatchValidator
from eventfold.services.fold import FoldService
from eventfold.settings import Settings
from eventfold.storage import open_storage
from eventfold.storage.decoded_batches import DecodedBatches
from eventfold.storage.sql_store import SqlStorage
from tests.databases import BACKENDS, fresh_database
from tests.test_roundtrip_properties import moments

_validator = BatchValidator(Limits())
_documents = msgspec.json.Decoder(FoldInput)

# What the server accepts (no NUL), so that every drawn batch is valid.
text = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]))
names = text.filter(lambda name: 0 < len(name) <= 40)


def typed_fields(values: st.SearchStrategy[Any]) -> st.SearchStrategy[list[dict[str, Any]]]:
    return st.lists(
        st.fixed_dictionaries({"key": names, "values": st.lists(values, max_size=3)}), max_size=2
    )


customs = st.fixed_dictionaries(
    {},
    optional={
        "string": typed_fields(text.filter(lambda value: len(value) <= 50)),
        "numeric": typed_fields(
            st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-1000, 1000))
        ),
        "date": typed_fields(moments.map(lambda m: m.isoformat())),
    },
)
events_without_unknown_fields = st.fixed_dictionaries(
    {
        "action": names,
        "email": st.from_regex(r"[A-Za-z0-9.]{1,10}@[a-z]{1,8}\.[A-Z]{2,4}", fullmatch=True),
    },
    optional={
        "phoneNumber": st.sampled_from(["+359 888 123 456", "+44 20 7946 0958"]),
        "profileId": names,
        "locale": st.sampled_from(["en", "BG", "de"]),
        "products": st.lists(
            st.fixed_dictionaries(
                {"id": st.one_of(names, st.integers(-(2**63), 2**63 - 1))},
                optional={"quantity": st.floats(min_value=0, max_value=1e6), "custom": customs},
            ),
            max_size=3,
        ),
        "custom": customs,
        "tags": st.lists(names, max_size=3),
        "timestamp": moments.map(lambda m: m.isoformat()),
    },
)


def fields_read(event: dict[str, Any]) -> list[str]:
    """Every field a segment's event leaf may read of this event."""
    custom = event.get("custom", {})
    return ["email", "phoneNumber", "locale", "tags", "products.id"] + [
        f"custom.{kind}.{field['key']}" for kind in custom for field in custom[kind]
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events_without_unknown_fields, min_size=1, max_size=5))
def test_the_fold_reads_a_handed_over_event_as_it_reads_its_stored_document(
    events: list[dict[str, Any]],
) -> None:
    body = msgspec.json.encode({"events": events})
    accepted, sources = _validator.validate_batch(body, now_ms())
    assert sources is not None
    for sent, event, source in zip(events, accepted, sources, strict=True):
        stored = _documents.decode(event.document)
        if source is None:  # custom dates: the fold decodes the document
            assert sent.get("custom", {}).get("date")
            continue
        assert identifiers_of(source) == identifiers_of(stored)
        assert state_of_event(source, 1_000, 7) == state_of_event(stored, 1_000, 7)
        assert source.action == stored.action
        for name in fields_read(sent):
            assert event_values(source, name) == event_values(stored, name), name


def test_a_batch_with_unknown_fields_is_handed_over_without_its_events() -> None:
    body = b'{"events": [{"action": "view", "email": "a@x.co", "colour": "red"}]}'
    assert _validator.validate_batch(body, now_ms()).fold_sources is None


def test_a_body_over_a_mebibyte_is_not_handed_over() -> None:
    """Its validated events would be held while it waits for its append."""
    event = {"action": "a", "email": "a@x.co", "tags": [f"{n:04d}" + "x" * 200 for n in range(5)]}
    under = msgspec.json.encode({"events": [event] * 900})
    over = msgspec.json.encode({"events": [event] * 1_100})
    assert len(under) <= MAX_HANDED_OVER_BODY_BYTES < len(over)
    assert _validator.validate_batch(under, now_ms()).fold_sources is not None
    assert _validator.validate_batch(over, now_ms()).fold_sources is None


def test_a_held_batch_is_taken_once_and_only_with_its_event_count() -> None:
    accepted, sources = _validator.validate_batch(
        b'{"events": [{"action": "a", "email": "a@x.co"}, {"action": "b", "email": "b@x.co"}]}',
        now_ms(),
    )
    assert sources is not None
    held = DecodedBatches(max_events=5)
    held.put(65_536, (accepted, sources))
    # Split for the quarantine: one event at the batch's position, not the two held.
    assert held.take(65_536, 1) is None
    assert held.take(65_536, 2) is None  # taken (and forgotten) by the look before
    for seq in range(1, 4):
        held.put(seq * 65_536, (accepted, sources))
    # Full at 5 events: the newest is left out, the oldest (folded next) are kept.
    assert len(held) == 4
    assert held.take(3 * 65_536, 2) is None
    assert held.take(65_536, 2) == (accepted, sources)


def test_batches_held_past_their_age_are_dropped() -> None:
    accepted, sources = _validator.validate_batch(
        b'{"events": [{"action": "a", "email": "a@x.co"}]}', now_ms()
    )
    assert sources is not None
    held = DecodedBatches(max_events=100, max_age_seconds=0.05)
    held.put(65_536, (accepted, sources))  # folded by another process, say
    time.sleep(0.1)
    held.put(2 * 65_536, (accepted, sources))
    assert len(held) == 1
    assert held.take(65_536, 1) is None
    assert held.take(2 * 65_536, 1) == (accepted, sources)


@pytest.mark.parametrize("backend", BACKENDS)
def test_profiles_folded_from_the_hand_off_equal_those_folded_from_records(
    backend: str, tmp_path: Path
) -> None:
    rng_bodies = [
        msgspec.json.encode(
            {
                "events": [
                    {
                        "action": ("view", "purchase")[(batch + index) % 2],
                        "email": f"p{(batch * 7 + index) % 11}@shop.example",
                        **({"phoneNumber": f"+3598880000{index % 3}"} if index % 4 == 0 else {}),
                        "products": [{"id": batch * 10 + index}],
                        "custom": {
                            "numeric": [{"key": "price", "values": [index + 0.5]}],
                            **(
                                {"date": [{"key": "born", "values": ["1990-05-01T10:00:00+02:00"]}]}
                                if index == 3
                                else {}
                            ),
                        },
                        "tags": [f"t{index % 3}"],
                        "timestamp": f"2026-11-{1 + batch:02d}T10:00:{index:02d}Z",
                    }
                    for index in range(6)
                ]
            }
        )
        for batch in range(12)
    ]
    profiles = []
    for hand_off in (True, False):
        with fresh_database(backend, tmp_path) as url:
            storage = open_storage(
                Settings(fold_process=False, database_url=url, fold_in_server=hand_off)
            )
            try:
                assert isinstance(storage, SqlStorage)
                assert (storage.decoded_batches is not None) is hand_off
                account = storage.find_key(hash_secret(storage.create_key("acme", now_ms())[1]))
                assert account is not None

                async def append_all(store: SqlStorage = storage, account_id: int = 0) -> None:
                    for body in rng_bodies:
                        accepted, sources = _validator.validate_batch(body, now_ms())
                        await store.append(account_id, now_ms(), accepted, None, sources)

                asyncio.run(append_all(account_id=account.account_id))
                if hand_off:
                    assert storage.decoded_batches is not None
                    assert len(storage.decoded_batches) == 72
                while FoldService(storage).fold_pending(20):
                    pass
                if hand_off:
                    assert storage.decoded_batches is not None
                    assert len(storage.decoded_batches) == 0  # every batch taken
                found = [
                    storage.find_profile(account.account_id, "email", f"p{n}@shop.example")
                    for n in range(11)
                ]
                profiles.append([state for _, state in filter(None, found)])
            finally:
                storage.close()
    assert len(profiles[0]) == 11
    assert profiles[0] == profiles[1]
