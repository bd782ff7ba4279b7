"""``eventfold import FILE``: load events from NDJSON, a ``{"events": [...]}`` JSON file or
CSV, in batches through the SDK.

Each batch's Idempotency-Key is derived from its place in the file and its content, so
running the same import again after an interruption re-sends batches the server already
has without storing them twice (within the server's idempotency window, 24 h by
default), while identical batches at different places are both stored.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgspec

from eventfold.client.core import Event, InvalidEvent, check_events

if TYPE_CHECKING:
    from eventfold.client.sync import Client

FORMATS = ("auto", "ndjson", "json", "csv")
LIST_SEPARATOR = ";"
IN_FLIGHT = 4  # batches sent at once
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


@dataclass
class ImportReport:
    sent: int = 0
    rejected: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".ndjson", ".jsonl"):
        return "ndjson"
    if suffix == ".csv":
        return "csv"
    return "json"


def read_records(path: Path, file_format: str) -> Iterator[tuple[int, Any]]:
    """(line or position, the record as read) for every record of the file."""
    if file_format == "ndjson":
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    yield number, _json_or_error(line)
    elif file_format == "json":
        document = json.loads(path.read_text(encoding="utf-8"))
        events = document.get("events") if isinstance(document, dict) else None
        if not isinstance(events, list):
            raise ValueError(f'{path} is not a JSON file of the form {{"events": [...]}}')
        yield from enumerate(events, 1)
    else:
        with path.open(encoding="utf-8", newline="") as rows:
            for number, row in enumerate(csv.DictReader(rows), 2):
                yield number, csv_event(row)


def csv_event(row: dict[str, str]) -> Event:
    """A CSV row as an event; the columns are documented in docs/client.md."""
    event: Event = {}
    custom: dict[str, list[dict[str, Any]]] = {}
    for column, cell in row.items():
        if column is None or cell is None or cell == "":
            continue
        if column in ("tags",):
            event["tags"] = cell.split(LIST_SEPARATOR)
        elif column == "products":
            event["products"] = [{"id": pid} for pid in cell.split(LIST_SEPARATOR)]
        elif column.startswith("custom."):
            _, kind, key = column.split(".", 2)
            values: list[Any] = cell.split(LIST_SEPARATOR)
            if kind == "numeric":
                values = [_number(value) for value in values]
            custom.setdefault(kind, []).append({"key": key, "values": values})
        else:
            event[column] = cell
    if custom:
        event["custom"] = custom
    return event


def run_import(
    path: Path,
    client: Client,
    *,
    file_format: str = "auto",
    batch_size: int = 500,
    rejects: IO[str] | None = None,
    progress: bool = True,
) -> ImportReport:
    """Sends the file's valid records; writes each invalid one to ``rejects``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    file_format = detect_format(path) if file_format == "auto" else file_format
    report = ImportReport()
    started = time.monotonic()
    pending: list[tuple[Future[bool], int, int, int]] = []  # (sent?, first, last, count)
    columns = (
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>9} events/s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, disable=not progress) as bar, ThreadPoolExecutor(IN_FLIGHT) as senders:
        task = bar.add_task("import", total=_count_records(path, file_format), rate="-")
        batch: list[Event] = []
        first = 0

        def send(last: int) -> None:
            # Place and content: a re-run repeats the key, while two identical batches at
            # different places in the file stay two batches.
            where = f"{first}-{last}:".encode()
            key = "import-" + hashlib.sha256(where + _encoder.encode(batch)).hexdigest()[:40]
            pending.append(
                (senders.submit(client.send_batch, list(batch), key), first, last, len(batch))
            )
            while len(pending) > IN_FLIGHT:
                _settle(pending.pop(0), report)
            bar.update(
                task,
                completed=report.sent + report.rejected + report.failed,
                rate=f"{report.sent / max(time.monotonic() - started, 1e-9):,.0f}",
            )

        candidates: list[tuple[int, Any]] = []

        def check_and_send() -> None:
            nonlocal batch, first
            for number, record in _valid_records(candidates, report, rejects):
                if not batch:
                    first = number
                batch.append(record)
            candidates.clear()
            if batch:
                send(number)
                batch = []

        number = 0
        for number, record in read_records(path, file_format):
            candidates.append((number, record))
            if len(candidates) >= batch_size:
                check_and_send()
        check_and_send()
        for entry in pending:
            _settle(entry, report)
        bar.update(task, completed=report.sent + report.rejected + report.failed)
    report.seconds = time.monotonic() - started
    return report


def _valid_records(
    candidates: list[tuple[int, Any]], report: ImportReport, rejects: IO[str] | None
) -> list[tuple[int, Any]]:
    """The records the server would accept; the others are counted and written out.
    The whole batch is checked at once, record by record only when that fails."""
    if all(isinstance(record, dict) for _, record in candidates):
        try:
            check_events([record for _, record in candidates])
        except InvalidEvent:
            pass
        else:
            return candidates
    valid = []
    for number, record in candidates:
        problem = _problem_with(record)
        if problem is None:
            valid.append((number, record))
            continue
        report.rejected += 1
        if rejects is not None:
            rejects.write(json.dumps({"line": number, **problem}) + "\n")
    return valid


def _settle(entry: tuple[Future[bool], int, int, int], report: ImportReport) -> None:
    delivered, first, last, count = entry
    if delivered.result():
        report.sent += count
    else:
        report.failed += count
        report.failures.append(f"lines {first}-{last}: not delivered (see the warning above)")


def _problem_with(record: Any) -> dict[str, Any] | None:
    if isinstance(record, Exception):
        return {"message": str(record)}
    if not isinstance(record, dict):
        return {"message": "a record must be a JSON object (an event)", "record": record}
    try:
        check_events([record])
    except InvalidEvent as error:
        return {
            "message": error.message if hasattr(error, "message") else str(error),
            "errors": [
                {
                    "path": e.path.removeprefix("events[0]").lstrip(".") or "event",
                    "message": e.message,
                }
                for e in error.errors
            ],
            "record": record,
        }
    return None


def _count_records(path: Path, file_format: str) -> int | None:
    if file_format == "json":
        return None
    with path.open("rb") as raw:
        lines = sum(1 for line in raw if line.strip())
    return lines - 1 if file_format == "csv" else lines


def _json_or_error(line: str) -> Any:
    try:
        return _decoder.decode(line)
    except msgspec.DecodeError as error:
        return ValueError(f"not valid JSON: {error}")


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text  # left for validation to reject, with its path
