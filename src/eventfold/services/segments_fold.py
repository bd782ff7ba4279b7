"""The fold's hook: segments are judged in the fold step's transaction, for the people
the step touched (by events or profile upserts), so a membership change commits with
the profile change that caused it (never before it, never lost)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from eventfold.domain.profile import CUSTOM_TYPES, FoldSource, FoldUpsert
from eventfold.domain.profile_book import ProfileBook
from eventfold.services.segment_evaluation import Evaluation, compile_accounts
from eventfold.storage.base import PendingEvent, PendingItem
from eventfold.storage.segment_contract import SegmentRecords


class SegmentTransaction(Protocol):
    """The part of a fold step's transaction (``FoldTransaction``) this hook uses."""

    def segment_records(self) -> SegmentRecords:
        """The segments' records in the transaction."""


def fold_segments(
    tx: SegmentTransaction, book: ProfileBook, folded: Sequence[tuple[int, PendingItem]]
) -> None:
    """Judges the step's people (``book`` settled and saved; ``folded``: each event or
    upsert with the profile it ended in) and the people merged away in it. Upserts count
    for no event leaf; the profile fields they set count as changed."""
    accounts = {book.accounts[pid] for pid in book.touched}
    if not accounts:
        return
    records = tx.segment_records()
    compiled = compile_accounts(records.definitions(accounts))
    if not compiled:
        return  # no segments in these accounts: one small query a step
    step_events: dict[int, list[tuple[FoldSource, int]]] = {}
    step_fields: dict[int, set[str]] = {}
    for profile_id, pending in folded:
        if isinstance(pending, PendingEvent):
            step_events.setdefault(profile_id, []).append(
                (pending.event, pending.accepted.occurred_at_ms)
            )
        else:
            step_fields.setdefault(profile_id, set()).update(fields_set_by(pending.upsert))
    people = {pid: (book.accounts[pid], book.states[pid]) for pid in book.touched}
    # A profile made by this step: its leaf states start empty, with nothing to read
    # back. (Not "holds only this step's events": a profile made by upserts holds none.)
    brand_new = book.created & people.keys()
    merged = {dead: book.final_id(dead) for dead in book.merged_into}
    Evaluation(records, compiled, step_events, brand_new, merged, step_fields=step_fields).run(
        people
    )


def fields_set_by(upsert: FoldUpsert) -> set[str]:
    """The profile fields (as segments name them) that an upsert can change."""
    fields = set()
    if upsert.email is not None:
        fields.add("email")
    if upsert.phoneNumber is not None:
        fields.add("phoneNumber")
    if upsert.addTags or upsert.removeTags:
        fields.add("tags")
    if upsert.custom is not None:
        for kind in CUSTOM_TYPES:
            fields.update(f"custom.{kind}.{f.key}" for f in getattr(upsert.custom, kind))
    return fields
