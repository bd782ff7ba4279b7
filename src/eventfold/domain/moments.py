"""Points in time as eventfold stores them: UTC, milliseconds since the Unix epoch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)


def as_utc(moment: datetime) -> datetime:
    """A zone-less moment is taken to be UTC; others are converted to UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def to_epoch_ms(moment: datetime) -> int:
    return (as_utc(moment) - EPOCH) // MILLISECOND


def from_epoch_ms(ms: int) -> datetime:
    return EPOCH + ms * MILLISECOND


def iso_from_ms(ms: int) -> str:
    """``2024-05-01T10:00:00.000Z``"""
    return from_epoch_ms(ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")
