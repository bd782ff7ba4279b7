"""What one request may contain. Defaults here; settings.py reads overrides."""

from __future__ import annotations

from dataclasses import dataclass

# No batch may hold more events than this, whatever is configured: the log numbers a
# batch's events from its own position, this many apart (storage/batch_records.py).
EVENTS_PER_BATCH_CEILING = 1 << 16


@dataclass(frozen=True, slots=True)
class Limits:
    """Every figure is documented in docs/configuration.md."""

    max_body_bytes: int = 10 * 1024 * 1024
    max_events_per_batch: int = 5_000
    max_name_length: int = 256
    max_string_length: int = 4_096
    max_future_seconds: int = 24 * 3600
