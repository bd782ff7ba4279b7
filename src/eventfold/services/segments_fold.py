"""The fold's hook: segments are judged in the fold step's transaction, for the people
the step touched (by events or profile upserts), so a membership change commits with
the profile change that caused it (never before it, never lost)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from eventfold.domain.fold_input import FoldSource
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
    for no event leaf; every segment of a person the step touched is judged, so what an
    upsert sets is seen."""
    accounts = {book.accounts[pid] for pid in book.touched}
    if not accounts:
        return
    records = tx.segment_records()
    compiled = compile_accounts(records.definitions(accounts))
    if not compiled:
        return  # no segments in these accounts: one small query a step
    step_events: dict[int, list[tuple[FoldSource, int]]] = {}
    for profile_id, pending in folded:
        if isinstance(pending, PendingEvent):
            step_events.setdefault(profile_id, []).append(
                (pending.event, pending.accepted.occurred_at_ms)
            )
    people = {pid: (book.accounts[pid], book.states[pid]) for pid in book.touched}
    # A profile made by this step: its leaf states start empty, with nothing to read
    # back. (Not "holds only this step's events": a profile made by upserts holds none.)
    brand_new = book.created & people.keys()
    merged = {dead: book.final_id(dead) for dead in book.merged_into}
    Evaluation(records, compiled, step_events, brand_new, merged).run(people)
