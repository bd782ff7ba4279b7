"""The profile fold: a person's profile is the merge of the events and profile upserts
that name them.

Every part of a profile is a commutative, associative merge (set unions, min/max,
sums, last-writer-wins registers ordered by event time and acceptance position, a top-50
by recency), so folding the same events in any order, in any grouping, and merging
profiles in any order gives the same profile. Tags are last-writer-wins registers too,
one a tag: its latest add (by an event or an upsert) or removal (by an upsert) decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from eventfold.domain.fold_input import CustomSource, FoldItem, FoldSource, FoldUpsert
from eventfold.domain.moments import iso_from_ms

MAX_PRODUCTS_PER_ACTION = 50
CUSTOM_TYPES = ("string", "numeric", "date")


# The fold's states are trees: nothing they hold refers back to them, so they can never be
# in a reference cycle, and ``gc=False`` keeps the cyclic collector from tracking them
# (decoding a realistic state took a quarter less time: docs/performance.md).
class Stamped(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A value with the (event time, acceptance position, index) that set it."""

    at: int
    seq: int
    index: int
    value: Any


class ActionStats(msgspec.Struct, array_like=True, frozen=True, gc=False):
    count: int
    first_at: int
    last_at: int


class ProfileState(msgspec.Struct, omit_defaults=True, gc=False):
    """What the fold keeps; ``profile_view`` turns it into the API's JSON."""

    emails: list[str] = []
    phone_numbers: list[str] = []
    profile_ids: list[str] = []
    first_seen: int | None = None
    last_seen: int | None = None
    event_count: int = 0
    locale: Stamped | None = None
    actions: dict[str, ActionStats] = {}
    # "type:key" -> the values of the latest event or upsert that set that custom field
    custom: dict[str, Stamped] = {}
    tags: list[str] = []  # the tags whose latest change in ``tag_changes`` is an add
    # tag -> its latest change: value True (added) or False (removed). Tags in ``tags``
    # without an entry were folded before tags had stamps (see ``_tag_stamps``).
    tag_changes: dict[str, Stamped] = {}
    # action -> products newest first, at most MAX_PRODUCTS_PER_ACTION, one entry per id
    products: dict[str, list[Stamped]] = {}


# A tag's add and removal in one upsert: the removal wins (index 1 over 0).
_ADDED, _REMOVED = 0, 1


def state_of_event(event: FoldSource, at: int, seq: int) -> ProfileState:
    """The profile that this one event alone makes; folding is merging these."""
    custom: dict[str, Stamped] = {}
    if event.custom is not None:
        for kind in CUSTOM_TYPES:
            for index, field in enumerate(getattr(event.custom, kind)):
                custom[f"{kind}:{field.key}"] = Stamped(at, seq, index, field.values)
    products: dict[str, list[Stamped]] = {}
    if event.products:
        # The first product listed counts as the newest of its event.
        entries = [Stamped(at, seq, -index, p.id) for index, p in enumerate(event.products)]
        products[event.action] = _newest_products(entries)
    return ProfileState(
        emails=[event.email] if event.email is not None else [],
        phone_numbers=[event.phoneNumber] if event.phoneNumber is not None else [],
        profile_ids=[event.profileId] if event.profileId is not None else [],
        first_seen=at,
        last_seen=at,
        event_count=1,
        locale=Stamped(at, seq, 0, event.locale) if event.locale is not None else None,
        actions={event.action: ActionStats(1, at, at)},
        custom=custom,
        tags=sorted(set(event.tags)),
        tag_changes={tag: Stamped(at, seq, _ADDED, True) for tag in event.tags},
        products=products,
    )


def state_of_upsert(upsert: FoldUpsert, at: int, seq: int) -> ProfileState:
    """The profile that this one upsert alone makes: identifiers, custom fields and tag
    changes, and no event (no counts, no firstSeen or lastSeen)."""
    custom: dict[str, Stamped] = {}
    _set_custom(custom, upsert.custom, at, seq)
    changes: dict[str, Stamped] = {}
    _change_tags(changes, upsert, at, seq)
    return ProfileState(
        emails=[upsert.email] if upsert.email is not None else [],
        phone_numbers=[upsert.phoneNumber] if upsert.phoneNumber is not None else [],
        profile_ids=[upsert.profileId] if upsert.profileId is not None else [],
        custom=custom,
        tags=_present(changes),
        tag_changes=changes,
    )


def fold_events(state: ProfileState, events: Sequence[tuple[FoldItem, int, int]]) -> ProfileState:
    """``state`` merged with the singleton state of each (event or upsert, at, seq), in
    one pass.

    The same result as merging ``state_of_event`` (``state_of_upsert``) of each into
    ``state`` (a property test holds the two together), at a fraction of the cost.
    """
    if not events:
        return state
    emails, phones, refs = set(state.emails), set(state.phone_numbers), set(state.profile_ids)
    tags = _tag_stamps(state)
    tags_before = tags
    first_seen, last_seen, locale = state.first_seen, state.last_seen, state.locale
    actions = {name: [s.count, s.first_at, s.last_at] for name, s in state.actions.items()}
    custom = dict(state.custom)
    products: dict[str, list[Stamped]] = {}
    upserts = 0
    for event, at, seq in events:
        if event.email is not None:
            emails.add(event.email)
        if event.phoneNumber is not None:
            phones.add(event.phoneNumber)
        if event.profileId is not None:
            refs.add(event.profileId)
        if isinstance(event, FoldUpsert):
            upserts += 1
            _set_custom(custom, event.custom, at, seq)
            if event.addTags or event.removeTags:
                tags = dict(tags) if tags is tags_before else tags
                _change_tags(tags, event, at, seq)
            continue
        if event.tags:
            tags = dict(tags) if tags is tags_before else tags
            added = Stamped(at, seq, _ADDED, True)
            for tag in event.tags:
                old = tags.get(tag)
                if old is None or (at, seq, _ADDED) >= (old.at, old.seq, old.index):
                    tags[tag] = added
        first_seen = at if first_seen is None or at < first_seen else first_seen
        last_seen = at if last_seen is None or at > last_seen else last_seen
        if event.locale is not None and (
            locale is None or (at, seq, 0) >= (locale.at, locale.seq, locale.index)
        ):
            locale = Stamped(at, seq, 0, event.locale)
        stats = actions.get(event.action)
        if stats is None:
            actions[event.action] = [1, at, at]
        else:
            stats[0] += 1
            stats[1] = min(stats[1], at)
            stats[2] = max(stats[2], at)
        if event.custom is not None:
            _set_custom(custom, event.custom, at, seq)
        if event.products:
            entries = products.setdefault(event.action, [])
            entries.extend(Stamped(at, seq, -i, p.id) for i, p in enumerate(event.products))
    merged_products = dict(state.products)
    for action, entries in products.items():
        merged_products[action] = _newest_products(merged_products.get(action, []) + entries)
    return ProfileState(
        emails=sorted(emails),
        phone_numbers=sorted(phones),
        profile_ids=sorted(refs),
        first_seen=first_seen,
        last_seen=last_seen,
        event_count=state.event_count + len(events) - upserts,
        locale=locale,
        actions={name: ActionStats(*stats) for name, stats in actions.items()},
        custom=custom,
        tags=state.tags if tags is tags_before else _present(tags),
        tag_changes=tags,
        products=merged_products,
    )


def merge_states(a: ProfileState, b: ProfileState) -> ProfileState:
    """The profile of the union of both profiles' events."""
    return ProfileState(
        emails=_union(a.emails, b.emails),
        phone_numbers=_union(a.phone_numbers, b.phone_numbers),
        profile_ids=_union(a.profile_ids, b.profile_ids),
        first_seen=_optional(min, a.first_seen, b.first_seen),
        last_seen=_optional(max, a.last_seen, b.last_seen),
        event_count=a.event_count + b.event_count,
        locale=_latest(a.locale, b.locale),
        actions=_merge_dicts(a.actions, b.actions, _merge_action),
        custom=_merge_dicts(a.custom, b.custom, _later),
        **_merge_tags(a, b),
        products=_merge_dicts(a.products, b.products, _merge_products),
    )


class ActionView(msgspec.Struct):
    count: int
    firstAt: str | None
    lastAt: str | None


class CustomValues(msgspec.Struct):
    key: str
    values: list[Any]


class CustomView(msgspec.Struct):
    string: list[CustomValues]
    numeric: list[CustomValues]
    date: list[CustomValues]


class ProfileView(msgspec.Struct):
    """A profile as the API returns it."""

    id: str
    emails: list[str]
    phoneNumbers: list[str]
    profileIds: list[str]
    firstSeen: str | None
    lastSeen: str | None
    eventCount: int
    locale: str | None
    actions: dict[str, ActionView]
    custom: CustomView
    tags: list[str]
    products: dict[str, list[str]]
    segments: list[str] = []  # keys of the segments the person is in (filled by services)


def profile_view(profile_id: str, state: ProfileState) -> ProfileView:
    """The profile as the API returns it."""
    custom: dict[str, list[CustomValues]] = {kind: [] for kind in CUSTOM_TYPES}
    for name in sorted(state.custom):
        kind, _, key = name.partition(":")
        custom[kind].append(CustomValues(key, state.custom[name].value))
    return ProfileView(
        id=profile_id,
        emails=state.emails,
        phoneNumbers=state.phone_numbers,
        profileIds=state.profile_ids,
        firstSeen=_iso(state.first_seen),
        lastSeen=_iso(state.last_seen),
        eventCount=state.event_count,
        locale=state.locale.value if state.locale is not None else None,
        actions={
            action: ActionView(s.count, _iso(s.first_at), _iso(s.last_at))
            for action, s in sorted(state.actions.items())
        },
        custom=CustomView(**custom),
        tags=state.tags,
        products={
            action: [entry.value for entry in entries]
            for action, entries in sorted(state.products.items())
        },
    )


def _set_custom(custom: dict[str, Stamped], fields: CustomSource | None, at: int, seq: int) -> None:
    """Sets each custom field of an event or upsert where it is the latest writer."""
    if fields is None:
        return
    for kind in CUSTOM_TYPES:
        for index, field in enumerate(getattr(fields, kind)):
            _stamp(custom, f"{kind}:{field.key}", Stamped(at, seq, index, field.values))


def _change_tags(changes: dict[str, Stamped], upsert: FoldUpsert, at: int, seq: int) -> None:
    for tag in upsert.addTags:
        _stamp(changes, tag, Stamped(at, seq, _ADDED, True))
    for tag in upsert.removeTags:
        _stamp(changes, tag, Stamped(at, seq, _REMOVED, False))


def _stamp(registers: dict[str, Stamped], name: str, new: Stamped) -> None:
    """Keeps ``new`` in the register ``name`` if it is the latest writer."""
    old = registers.get(name)
    if old is None or (new.at, new.seq, new.index) >= (old.at, old.seq, old.index):
        registers[name] = new


def _tag_stamps(state: ProfileState) -> dict[str, Stamped]:
    """Each tag's latest change. A tag folded before tags had stamps counts as added at
    the profile's lastSeen (the latest its event can have been), ahead of nothing
    folded since: an older removal leaves it, a later one removes it."""
    changes = state.tag_changes
    if len(changes) >= len(state.tags) and all(tag in changes for tag in state.tags):
        return changes
    changes = dict(changes)
    for tag in state.tags:
        changes.setdefault(tag, Stamped(state.last_seen or 0, 0, _ADDED, True))
    return changes


def _present(changes: dict[str, Stamped]) -> list[str]:
    return sorted(tag for tag, change in changes.items() if change.value)


def _merge_tags(a: ProfileState, b: ProfileState) -> dict[str, Any]:
    if not (b.tags or b.tag_changes):
        return {"tags": a.tags, "tag_changes": a.tag_changes}
    if not (a.tags or a.tag_changes):
        return {"tags": b.tags, "tag_changes": b.tag_changes}
    changes = _merge_dicts(_tag_stamps(a), _tag_stamps(b), _later)
    return {"tags": _present(changes), "tag_changes": changes}


def _union(a: list[str], b: list[str]) -> list[str]:
    if not b:
        return a
    if not a:
        return b
    return sorted(set(a).union(b))


def _optional(pick: Any, a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    result: int = pick(a, b)
    return result


def _order(stamp: Stamped) -> tuple[int, int, int]:
    return (stamp.at, stamp.seq, stamp.index)


def _later(a: Stamped, b: Stamped) -> Stamped:
    return a if _order(a) >= _order(b) else b


def _latest(a: Stamped | None, b: Stamped | None) -> Stamped | None:
    if a is None:
        return b
    if b is None:
        return a
    return _later(a, b)


def _merge_action(a: ActionStats, b: ActionStats) -> ActionStats:
    return ActionStats(a.count + b.count, min(a.first_at, b.first_at), max(a.last_at, b.last_at))


def _merge_products(a: list[Stamped], b: list[Stamped]) -> list[Stamped]:
    return _newest_products(a + b)


def _newest_products(entries: list[Stamped]) -> list[Stamped]:
    """One entry per product id (its newest), newest first, at most the configured count."""
    newest: dict[str, Stamped] = {}
    for entry in sorted(entries, key=_order, reverse=True):
        newest.setdefault(entry.value, entry)
        if len(newest) == MAX_PRODUCTS_PER_ACTION:
            break
    return list(newest.values())


def _merge_dicts(a: dict[str, Any], b: dict[str, Any], merge: Any) -> dict[str, Any]:
    if not b:
        return a
    if not a:
        return b
    merged = dict(a)
    for key, value in b.items():
        merged[key] = merge(merged[key], value) if key in merged else value
    return merged


def _iso(ms: int | None) -> str | None:
    return iso_from_ms(ms) if ms is not None else None
