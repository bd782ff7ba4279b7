"""Identity resolution for one fold step: which profile each event belongs to.

Identifiers (email, phone number, profile id) are per account. An event naming two or
more identifiers links them; when that joins two profiles they merge into the one with
the smaller id (the older one), so the partition of identifiers into people is the
connected components of the links, whatever the order of the events.
"""

from __future__ import annotations

from collections.abc import Callable

from eventfold.domain.fold_input import FoldItem, identifiers_of
from eventfold.domain.profile import ProfileState, fold_events, merge_states

IdentityKey = tuple[int, str, str]  # (account id, kind, normalised value)


class ProfileBook:
    """The profiles and identifiers a fold step touches; storage loads it and saves it."""

    def __init__(
        self,
        identities: dict[IdentityKey, int],
        states: dict[int, tuple[int, ProfileState]],
        allocate_id: Callable[[], int],
    ) -> None:
        self.identities = dict(identities)
        self.states = {pid: state for pid, (_, state) in states.items()}
        self.accounts = {pid: account for pid, (account, _) in states.items()}
        self.merged_into: dict[int, int] = {}
        self.changed_identities: dict[IdentityKey, int] = {}
        self.touched: set[int] = set()
        # Profiles this step made, that hold nothing made before it (no merge with one).
        self.created: set[int] = set()
        self._allocate_id = allocate_id
        # Events (and upserts) wait here per profile and are applied in one pass by ``settle``.
        self._pending: dict[int, list[tuple[FoldItem, int, int]]] = {}

    def fold(self, account_id: int, event: FoldItem, at: int, seq: int) -> int:
        """Folds one event (or profile upsert) into its person's profile, making the
        profile if none has its identifiers; returns that profile's id."""
        keys = [(account_id, kind, value) for kind, value in identifiers_of(event)]
        found = sorted({self.identities[key] for key in keys if key in self.identities})
        if found:
            survivor = found[0]
            for other in found[1:]:
                self._merge(other, survivor)
        else:
            survivor = self._allocate_id()
            self.created.add(survivor)
            self.states[survivor] = ProfileState()
            self.accounts[survivor] = account_id
        self._pending.setdefault(survivor, []).append((event, at, seq))
        for key in keys:
            if self.identities.get(key) != survivor:
                self.identities[key] = survivor
                self.changed_identities[key] = survivor
        self.touched.add(survivor)
        return survivor

    def settle(self) -> None:
        """Applies the events folded so far to their profiles' states."""
        for profile_id, events in self._pending.items():
            self.states[profile_id] = fold_events(self.states[profile_id], events)
        self._pending.clear()

    def final_id(self, profile_id: int) -> int:
        """The profile that ``profile_id`` was merged into, or itself."""
        while profile_id in self.merged_into:
            profile_id = self.merged_into[profile_id]
        return profile_id

    def _merge(self, dead: int, survivor: int) -> None:
        self.states[survivor] = merge_states(self.states[survivor], self.states.pop(dead))
        self._pending.setdefault(survivor, []).extend(self._pending.pop(dead, []))
        self.accounts.pop(dead)
        if dead not in self.created:
            self.created.discard(survivor)
        self.created.discard(dead)
        self.merged_into[dead] = survivor
        self.touched.discard(dead)
        for key, owner in self.identities.items():
            if owner == dead:
                self.identities[key] = survivor
                self.changed_identities[key] = survivor
