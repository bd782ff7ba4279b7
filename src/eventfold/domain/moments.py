"""Points in time as eventfold stores them: UTC, milliseconds since the Unix epoch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)


class OutOfRange(msgspec.ValidationError):
    """A moment whose UTC form is before year 1 or after 9999 (0001-01-01T00:00:00+01:00):
    a client's mistake, raised as a ValidationError so that parsers report it like any
    malformed date-time."""


def as_utc(moment: datetime) -> datetime:
    """A zone-less moment is taken to be UTC; others are converted to UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise OutOfRange(
            f"{moment.isoformat()} is outside years 1 to 9999 once converted to UTC"
        ) from None


def to_epoch_ms(moment: datetime) -> int:
    return (as_utc(moment) - EPOCH) // MILLISECOND


def from_epoch_ms(ms: int) -> datetime:
    return EPOCH + ms * MILLISECOND


def iso_from_ms(ms: int) -> str:
    """``2024-05-01T10:00:00.000Z``"""
    return from_epoch_ms(ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")
