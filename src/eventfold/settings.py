"""All configuration, read in one place: defaults, then ``EVENTFOLD_*`` variables.

Command-line options override these through :meth:`Settings.replace`. Nothing else in
eventfold reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventfold.domain.limits import EVENTS_PER_BATCH_CEILING, Limits
from eventfold.domain.webhook_retries import parse_schedule
from eventfold.errors import ConfigurationError

ENV_PREFIX = "EVENTFOLD_"
DEFAULT_DATABASE_URL = "sqlite:///eventfold.db"


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    limits: Limits = dataclasses.field(default_factory=Limits)
    # How long a request's body may take to arrive before the answer is 408.
    body_timeout_seconds: float = 30.0
    # Requests one server process handles at once; past it a request gets 503 before its
    # body is read. Measured with bench/uploads.py: each 9 MiB batch in flight holds
    # ~25 MB (peak 259 MB at a cap of 8, 815 MB at 32), so 100 holds such bodies to
    # ~2.5 GB. Not lower: 100-event batches gain throughput up to 64 connections
    # (docs/performance.md), and with 64 busy connections a cap of 64 gave a 65th client
    # nothing but 503s.
    max_concurrent_requests: int = 100
    # After an error answered before the body was read, how long the server keeps reading
    # (and discarding) what the client still sends, so that it can read the answer.
    linger_seconds: float = 10.0
    # Upper bound on events queued for the writer; past it ingest answers 503.
    max_pending_events: int = 200_000
    # Unfolded events past which ingest answers 503, so a stalled fold cannot grow the
    # backlog without bound.
    max_fold_lag_events: int = 1_000_000
    # Accepted events are in their profiles within this many seconds (the seed's "live
    # within 10 seconds"): ingest answers 503 before the fold falls that far behind.
    max_fold_lag_seconds: float = 10.0
    # How long an SQLite write waits for another process's lock before answering 503.
    sqlite_busy_timeout_ms: int = 5_000
    # How long a repeated Idempotency-Key is recognised.
    idempotency_window_seconds: int = 24 * 3600
    # Fold loops per `serve` (with the fold in the server) or `worker` process. On
    # PostgreSQL they fold different people at once, each on a connection of its own; on
    # SQLite (one writer) more than one is safe but not faster.
    fold_threads: int = 1
    # Whether `eventfold serve` folds events into profiles itself (else run `eventfold worker`).
    fold_in_server: bool = True
    # With the fold in the server: whether `serve` runs it (with the segments' loops) in
    # a child `eventfold worker` process that it starts, restarts and stops, so that the
    # fold has a core of its own; else on a thread of the server process, which also
    # hands the fold the events it validated (no second decode).
    fold_process: bool = True
    # Also log other libraries' INFO lines (HTTP clients, NATS), not only their warnings.
    verbose: bool = False
    # Log lines on stderr: "json" (one object a line) or "text".
    log_format: str = "json"
    # Folder where server processes share their metrics (set by `serve --workers N`).
    metrics_dir: str = ""
    # /readyz answers 503 when the fold is more than this many seconds behind.
    ready_max_lag_seconds: float = 10.0
    # How long a reading of the fold's lag is reused by ingest's backpressure, /healthz,
    # /readyz and /metrics (it counts the backlog: one read at a time, off the event loop).
    fold_lag_cache_seconds: float = 0.5
    # How long a looked-up key stays cached; revocation takes effect within this time.
    key_cache_seconds: float = 1.0
    # Segments: how often the timer looks for people whose time window moved (seconds),
    # and how long the change feed keeps a change (days; a cursor is valid that long).
    segment_timer_seconds: float = 1.0
    segment_change_retention_days: float = 30.0
    # Where accepted batches go before the fold: empty = the database itself, or
    # nats://host:4222[,host2:4222...] for a JetStream cluster (see docs/deploy.md).
    log_url: str = ""
    # The JetStream stream's name, and its replicas (0: 3, or fewer when the cluster is smaller).
    nats_stream: str = "EVENTFOLD"
    nats_replicas: int = 0
    # How long an API node keeps retrying a publish before answering 503.
    nats_publish_timeout_seconds: float = 10.0
    # How long a worker may hold fetched batches unacknowledged before others get them:
    # the delay of batches a dead worker held. A live worker says it is still at work
    # every third of it, so it need not cover the longest apply.
    nats_ack_wait_seconds: float = 5.0
    # How long JetStream recognises a repeated batch by its id (Idempotency-Key or request).
    nats_duplicate_window_seconds: float = 600.0

    # --- webhooks (docs/webhooks.md) ---
    # Whether webhook URLs may point at private, loopback or link-local addresses (tests,
    # receivers on the same network); checked when a URL is saved and at every connection.
    webhooks_allow_private: bool = False
    # The delays before each attempt, comma-separated seconds; empty: the Standard
    # Webhooks schedule (at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h).
    webhook_retry_seconds: str = ""
    # How long one attempt may take in all before it counts as failed (and is retried).
    webhook_timeout_seconds: float = 10.0
    # Attempts in flight at once per endpoint and process.
    webhook_concurrency: int = 4
    # How long a process holds the messages it attempts; past it (a crash) another
    # process attempts them again. Longer than webhook_timeout_seconds.
    webhook_lease_seconds: float = 60.0
    # Whether `eventfold serve` delivers webhooks itself (`eventfold worker` always does).
    deliver_in_server: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Defaults overridden by ``EVENTFOLD_<NAME>`` variables (names upper-cased)."""
        env = os.environ if environ is None else environ
        top: dict[str, Any] = {}
        limits: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name == "limits":
                continue
            raw = env.get(ENV_PREFIX + field.name.upper())
            if raw is not None:
                top[field.name] = _parse(field.name, raw, type(getattr(cls(), field.name)))
        for field in dataclasses.fields(Limits):
            raw = env.get(ENV_PREFIX + field.name.upper())
            if raw is not None:
                limits[field.name] = _parse(field.name, raw, int)
        return cls(limits=Limits(**limits), **top)

    def __post_init__(self) -> None:
        if not 0 < self.limits.max_events_per_batch <= EVENTS_PER_BATCH_CEILING:
            raise ConfigurationError(
                f"{ENV_PREFIX}MAX_EVENTS_PER_BATCH={self.limits.max_events_per_batch}: use "
                f"1 to {EVENTS_PER_BATCH_CEILING}"
            )
        if self.log_url:
            parse_log_url(self.log_url)
        try:
            parse_schedule(self.webhook_retry_seconds)
        except ValueError as error:
            raise ConfigurationError(f"{ENV_PREFIX}WEBHOOK_RETRY_SECONDS: {error}") from None
        if self.webhook_lease_seconds <= self.webhook_timeout_seconds:
            raise ConfigurationError(
                f"{ENV_PREFIX}WEBHOOK_LEASE_SECONDS must be longer than "
                f"{ENV_PREFIX}WEBHOOK_TIMEOUT_SECONDS, or attempts in flight would overlap"
            )
        if self.log_format not in ("json", "text"):
            raise ConfigurationError(
                f"{ENV_PREFIX}LOG_FORMAT={self.log_format!r}: use 'json' or 'text'"
            )

    def as_environment(self) -> dict[str, str]:
        """These settings as ``EVENTFOLD_*`` variables (what ``from_env`` reads back)."""
        found = {
            ENV_PREFIX + field.name.upper(): str(getattr(self, field.name))
            for field in dataclasses.fields(self)
            if field.name != "limits"
        }
        for field in dataclasses.fields(Limits):
            found[ENV_PREFIX + field.name.upper()] = str(getattr(self.limits, field.name))
        return found

    def export_to_environment(self) -> None:
        """Writes the settings into this process's environment, so that server processes
        started from here (uvicorn workers) build the same settings."""
        os.environ.update(self.as_environment())

    @property
    def folds_in_a_child(self) -> bool:
        """Whether ``serve`` runs its fold in a child ``eventfold worker`` process."""
        return self.fold_in_server and self.fold_process

    @property
    def folds_on_a_thread(self) -> bool:
        """Whether ``serve`` runs its fold on threads of its own process."""
        return self.fold_in_server and not self.fold_process

    def replace(self, **changes: Any) -> Settings:
        """A copy with the given (non-None) fields changed; used for command-line options."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


_MAY_BE_ZERO = ("port", "nats_replicas")
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _parse(name: str, raw: str, kind: type) -> Any:
    if kind is bool:
        if raw.lower() not in _BOOLEANS:
            raise ConfigurationError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not true or false")
        return _BOOLEANS[raw.lower()]
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigurationError(
            f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind.__name__}"
        ) from None
    if kind in (int, float) and value <= 0 and name not in _MAY_BE_ZERO:
        raise ConfigurationError(f"{ENV_PREFIX}{name.upper()} must be greater than zero")
    return value


@dataclass(frozen=True, slots=True)
class DatabaseLocation:
    """A parsed database URL."""

    scheme: str
    path: Path | None = None
    url: str = ""


def parse_database_url(url: str) -> DatabaseLocation:
    """``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``postgresql://...``."""
    if url.startswith("sqlite:///"):
        rest = url.removeprefix("sqlite:///")
        if not rest or rest.endswith("/"):
            raise ConfigurationError(
                f"database URL {url!r} names no file; use sqlite:///relative/path.db "
                "or sqlite:////absolute/path.db"
            )
        # "sqlite:////abs.db" leaves "/abs.db": an absolute path; otherwise relative.
        return DatabaseLocation("sqlite", path=Path(rest), url=url)
    if url.startswith(("postgresql://", "postgres://")):
        return DatabaseLocation("postgresql", url=url)
    raise ConfigurationError(
        f"unsupported database URL {url!r}; use sqlite:///relative/path.db, "
        "sqlite:////absolute/path.db or postgresql://user@host:port/database"
    )


def parse_log_url(url: str) -> list[str]:
    """``nats://host:4222[,host2:4222...]`` as the list of server URLs it names."""
    if not url.startswith("nats://") or url == "nats://":
        raise ConfigurationError(
            f"unsupported log URL {url!r}; use nats://host:4222 or "
            "nats://host1:4222,host2:4222,host3:4222 (or no --log: the database is the log)"
        )
    servers = [part.strip() for part in url.removeprefix("nats://").split(",")]
    if not all(servers):
        raise ConfigurationError(f"log URL {url!r} has an empty server between commas")
    return [f"nats://{server}" for server in servers]
