"""The ``eventfold`` command: serve, keys."""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import sys
import tempfile
from collections.abc import Sequence
from contextlib import closing
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from eventfold import __version__
from eventfold.client.importer import FORMATS
from eventfold.clock import now_ms
from eventfold.errors import ConfigurationError
from eventfold.garbage_collection import tune_for_the_fold
from eventfold.http.protocol import BoundedHttpToolsProtocol
from eventfold.observability.logs import LOG_FORMATS, configure_logging
from eventfold.settings import Settings
from eventfold.storage import open_storage
from eventfold.storage.base import Storage

EXIT_USAGE = 2
DEFAULT_ACCOUNT = "default"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env().replace(
            database_url=getattr(args, "database", None),
            log_url=getattr(args, "log", None),
            verbose=args.verbose,
            **{name: getattr(args, name, None) for name in ("host", "port", "workers")},
        )
        result: int = args.run(args, settings)
    except ConfigurationError as error:
        print(f"eventfold: error: {error.message}", file=sys.stderr)
        return EXIT_USAGE
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eventfold", description=__doc__)
    parser.add_argument("--version", action="version", version=f"eventfold {__version__}")
    parser.add_argument(
        "--verbose",
        action="store_const",
        const=True,
        help="also log other libraries' INFO lines (HTTP requests, NATS), not only eventfold's",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    database = argparse.ArgumentParser(add_help=False)
    database.add_argument(
        "--database",
        metavar="URL",
        help="sqlite:///relative.db or sqlite:////absolute.db "
        "(default: $EVENTFOLD_DATABASE_URL or sqlite:///eventfold.db)",
    )

    log = argparse.ArgumentParser(add_help=False)
    log.add_argument(
        "--log",
        metavar="URL",
        help="nats://host:4222[,host2:4222...]: keep accepted batches in a JetStream cluster "
        "(default: $EVENTFOLD_LOG_URL, or none: the database is the log)",
    )

    serve = commands.add_parser("serve", parents=[database, log], help="run the HTTP API")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument("--workers", type=int, help="server processes (default 1)")
    serve.add_argument(
        "--log-format", choices=LOG_FORMATS, help="log lines on stderr: json (default) or text"
    )
    serve.set_defaults(run=_serve)

    worker = commands.add_parser(
        "worker",
        parents=[database, log],
        help="fold accepted events into profiles and deliver webhooks (foreground)",
    )
    worker.add_argument(
        "--fold-of",
        type=int,
        metavar="PID",
        help="run as the fold of the `eventfold serve` process PID (which starts it so): "
        "stop when that process is gone, and leave webhook deliveries to it",
    )
    worker.add_argument(
        "--report-health",
        metavar="FILE",
        help="write the loops' health to FILE every second (for the server, with --fold-of)",
    )
    worker.set_defaults(run=_worker)

    migrate = commands.add_parser(
        "migrate",
        parents=[database],
        help="bring the schema up to date, or copy a database into a new one (--from)",
    )
    migrate.add_argument(
        "--from",
        dest="source",
        metavar="URL",
        help="copy everything from this database into --database (empty)",
    )
    migrate.set_defaults(run=_migrate)

    importing = commands.add_parser(
        "import", help="send events from an NDJSON, JSON or CSV file (see docs/client.md)"
    )
    importing.add_argument("file", type=Path, metavar="FILE")
    importing.add_argument("--url", default="http://127.0.0.1:8000", help="the eventfold server")
    importing.add_argument("--key", required=True, help="a secret key of the account")
    importing.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="default: by extension (.ndjson/.jsonl, .csv, else JSON)",
    )
    importing.add_argument("--batch-size", type=int, default=500)
    importing.add_argument(
        "--rejects",
        type=Path,
        metavar="FILE",
        help="where to write invalid records (default FILE.rejects.ndjson)",
    )
    importing.set_defaults(run=_import)

    fold = commands.add_parser("fold", help="inspect the fold").add_subparsers(
        required=True, metavar="ACTION"
    )
    quarantine = fold.add_parser(
        "quarantine", help="events the fold set aside because they could not be folded"
    ).add_subparsers(required=True, metavar="ACTION")
    quarantine_list = quarantine.add_parser(
        "list", parents=[database], help="list quarantined events with their errors"
    )
    quarantine_list.add_argument("--limit", type=int, default=100, help="at most this many")
    quarantine_list.set_defaults(run=_quarantine_list)
    quarantine_retry = quarantine.add_parser(
        "retry",
        parents=[database],
        help="put quarantined events back on the fold's queue (all, or the SEQs given)",
    )
    quarantine_retry.add_argument("seqs", type=int, nargs="*", metavar="SEQ")
    quarantine_retry.set_defaults(run=_quarantine_retry)

    keys = commands.add_parser("keys", help="manage secret keys").add_subparsers(
        required=True, metavar="ACTION"
    )
    create = keys.add_parser("create", parents=[database], help="create a key for an account")
    create.add_argument("--account", required=True, help="account name (created if new)")
    create.add_argument(
        "--rate-limit",
        type=_rate,
        metavar="N",
        help="most events per second this key may send (default: unlimited)",
    )
    create.set_defaults(run=_keys_create)
    listing = keys.add_parser("list", parents=[database], help="list keys (never secrets)")
    listing.set_defaults(run=_keys_list)
    limit = keys.add_parser(
        "set-rate-limit", parents=[database], help="change a key's events-per-second limit"
    )
    limit.add_argument("key_id", metavar="KEY_ID")
    limit.add_argument("rate_limit", type=_rate, metavar="N", help="events per second, or 'none'")
    limit.set_defaults(run=_keys_set_rate_limit)
    revoke = keys.add_parser("revoke", parents=[database], help="revoke a key by its id")
    revoke.add_argument("key_id", metavar="KEY_ID")
    revoke.set_defaults(run=_keys_revoke)
    return parser


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    if settings.workers < 1:
        raise ConfigurationError("--workers must be at least 1")
    with closing(open_storage(settings)) as storage:
        if settings.log_url:
            _check_log(settings, storage)
        secret = None if storage.has_keys() else storage.create_key(DEFAULT_ACCOUNT, now_ms())[1]
    _check_port_is_free(settings.host, settings.port)
    through = f" through the log {settings.log_url}" if settings.log_url else ""
    print(
        f"eventfold {__version__}: storing events in {settings.database_url}{through}", flush=True
    )
    if secret is not None:
        _print_first_key(secret, settings)
    print(f"listening on http://{settings.host}:{settings.port} (Ctrl+C to stop)", flush=True)
    if (settings.workers > 1 or settings.folds_in_a_child) and not settings.metrics_dir:
        # The processes (a fold's child too) add up their metrics in a shared folder
        # (prometheus-client's multiprocess mode, which reads its own variable).
        settings = settings.replace(metrics_dir=tempfile.mkdtemp(prefix="eventfold-metrics-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = settings.metrics_dir
    # Every server process, the workers too, builds its settings from the environment.
    settings.export_to_environment()
    uvicorn.run(
        "eventfold.http.app:create_app_from_environment",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http=BoundedHttpToolsProtocol,
        access_log=False,
        timeout_keep_alive=5,
        log_level="warning",
        log_config=None,  # eventfold configures logging itself (configure_logging)
    )
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    configure_logging(settings.log_format, settings.verbose)
    import asyncio

    from eventfold.bootstrap import build_worker
    from eventfold.fold_process import reporting_health, stop_with

    if args.fold_of is not None:
        stop_with(args.fold_of)
    with closing(open_storage(settings)) as storage:
        work = build_worker(settings, storage, deliveries=args.fold_of is None)
        tune_for_the_fold()
        source = f" from the log {settings.log_url}" if settings.log_url else ""
        print(f"eventfold worker: folding events{source} in {settings.database_url}", flush=True)
        with reporting_health(args.report_health, work):
            asyncio.run(work.run_until_signalled())
    return 0


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    if args.source is None:
        with closing(open_storage(settings.replace(fold_in_server=False))):
            pass  # opening migrates
        print(f"the schema of {settings.database_url} is up to date")
        return 0
    from eventfold.storage.copy import copy_database

    copied = copy_database(args.source, settings.database_url)
    print(f"copied {args.source} into {settings.database_url}:")
    for table, rows in copied.items():
        print(f"  {table}: {rows} rows")
    return 0


def _import(args: argparse.Namespace, settings: Settings) -> int:
    from eventfold.client.importer import run_import
    from eventfold.client.sync import Client

    if not args.file.is_file():
        raise ConfigurationError(f"{args.file} is not a file")
    rejects_path = args.rejects or args.file.with_name(args.file.name + ".rejects.ndjson")
    configure_logging("text", settings.verbose)
    with rejects_path.open("w", encoding="utf-8") as rejects, Client(args.url, args.key) as client:
        report = run_import(
            args.file,
            client,
            file_format=args.format,
            batch_size=args.batch_size,
            rejects=rejects,
            progress=sys.stderr.isatty(),
        )
    print(
        f"sent {report.sent} events in {report.seconds:.1f} s "
        f"({report.events_per_second:,.0f} events/s); rejected {report.rejected} "
        f"(written to {rejects_path}); not delivered {report.failed}"
    )
    for failure in report.failures:
        print(f"  {failure}", file=sys.stderr)
    return 0 if report.failed == 0 else 1


def _check_log(settings: Settings, storage: Storage) -> None:
    """Connects to the NATS log once (making its stream), so that a wrong --log is an
    error here rather than a failed start of every server process."""
    import asyncio

    from eventfold.storage.nats import NatsConsumer

    async def probe() -> None:
        log = NatsConsumer(settings)
        await log.connect()
        await log.disconnect()

    asyncio.run(probe())


def _check_port_is_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            reason = "it is already in use" if error.errno == errno.EADDRINUSE else error.strerror
            raise ConfigurationError(
                f"cannot listen on {host}:{port}: {reason}; stop the other server or pick "
                "another port with --port"
            ) from None


def _print_first_key(secret: str, settings: Settings) -> None:
    batch = json.dumps(
        json.loads(
            resources.files("eventfold").joinpath("seed_batch.json").read_text(encoding="utf-8")
        )
    )
    print(
        f"""
Created a secret key for account '{DEFAULT_ACCOUNT}'. It is shown only this once:

    {secret}

Send a first event (the example batch of the Custom Event API):

curl -i -H 'Content-Type: application/json' -H 'Authorization: Bearer {secret}' \\
  -XPOST http://{settings.host}:{settings.port}/api/v0/events -d '{batch}'
""",
        flush=True,
    )


def _quarantine_list(args: argparse.Namespace, settings: Settings) -> int:
    with closing(open_storage(settings)) as storage:
        events = storage.quarantined(args.limit)
    if not events:
        print("no event is quarantined")
        return 0
    print(f"{'SEQ':<12} {'ACCOUNT':<8} {'QUARANTINED':<20} ERROR")
    for event in events:
        print(
            f"{event.seq:<12} {event.account_id:<8} {_when(event.quarantined_at_ms):<20} "
            f"{event.error}"
        )
    return 0


def _quarantine_retry(args: argparse.Namespace, settings: Settings) -> int:
    with closing(open_storage(settings)) as storage:
        released = storage.release_quarantined(args.seqs or None)
    print(
        f"put {released} quarantined event(s) back on the fold's queue; a running fold "
        "folds them within seconds, or quarantines them again with the error"
    )
    return 0 if released or not args.seqs else 1


def _keys_create(args: argparse.Namespace, settings: Settings) -> int:
    with closing(open_storage(settings)) as storage:
        record, secret = storage.create_key(args.account, now_ms(), args.rate_limit)
    print(
        f"created key {record.id} for account '{record.account_name}'; the secret is shown "
        "only now:"
    )
    print(secret)
    return 0


def _keys_list(args: argparse.Namespace, settings: Settings) -> int:
    with closing(open_storage(settings)) as storage:
        records = storage.list_keys()
    print(f"{'ID':<22} {'ACCOUNT':<20} {'CREATED':<20} {'LAST USED':<20} REVOKED")
    for r in records:
        print(
            f"{r.id:<22} {r.account_name:<20} {_when(r.created_at_ms):<20} "
            f"{_when(r.last_used_at_ms):<20} {_when(r.revoked_at_ms)}"
        )
    return 0


def _keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    with closing(open_storage(settings)) as storage:
        found = storage.revoke_key(args.key_id, now_ms())
    if not found:
        print(
            f"eventfold: error: no key with id {args.key_id!r} (see 'eventfold keys list')",
            file=sys.stderr,
        )
        return 1
    print(f"revoked key {args.key_id}; running servers refuse it within a second")
    return 0


def _keys_set_rate_limit(args: argparse.Namespace, settings: Settings) -> int:
    with closing(open_storage(settings)) as storage:
        found = storage.set_rate_limit(args.key_id, args.rate_limit)
    if not found:
        print(
            f"eventfold: error: no key with id {args.key_id!r} (see 'eventfold keys list')",
            file=sys.stderr,
        )
        return 1
    shown = "unlimited" if args.rate_limit is None else f"{args.rate_limit:g} events/s"
    print(f"key {args.key_id} is now limited to {shown}; servers apply it within a second")
    return 0


def _rate(raw: str) -> float | None:
    if raw.lower() == "none":
        return None
    try:
        rate = float(raw)
    except ValueError:
        rate = 0.0
    if not 0 < rate < float("inf"):
        raise argparse.ArgumentTypeError(f"{raw!r} is not a positive number of events per second")
    return rate


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
