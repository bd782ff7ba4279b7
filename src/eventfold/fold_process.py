"""``eventfold serve``'s fold in a child process (``Settings.fold_process``): an
``eventfold worker --fold-of PID`` with the server's settings, started with the server,
started again when it exits, stopped with it.

Why a process: a fold on a thread of the server shares one interpreter lock with the
request path, so the two take turns on one core. In a process of its own the fold has a
core to itself; the log (the database's batch table, or JetStream) is already the
hand-over between them, and SQLite's one writer lock is shared through its file
(docs/performance.md, "The fold in a process of its own", has the figures).

The child runs the fold loops and the segments' backfill and timer; webhook deliveries
stay with the server (``deliver_in_server``). Every second the child writes how its loops
are doing to a file the server reads for ``/healthz`` and ``/readyz``
(``--report-health``): a child whose loops fail shows their error, and one that stops
reporting (hung) shows as failing. It has a session of its own, so a Ctrl+C
meant for the server reaches it only through the server's orderly stop; on Linux it asks
the kernel to stop it (SIGTERM) when the server dies, even by SIGKILL.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from eventfold.clock import now_ms
from eventfold.services.background import BackgroundWork
from eventfold.services.fold import FoldHealth, LoopsHealth
from eventfold.services.segment_loops import SegmentLoopsHealth, timer_lag
from eventfold.settings import Settings
from eventfold.storage.segment_contract import SegmentStore

logger = logging.getLogger("eventfold.fold_process")

# A child that exits is started again after RESTART_SECONDS, doubled for each exit in a
# row up to MAX_RESTART_SECONDS; one that has run HEALTHY_AFTER_SECONDS counts as well.
RESTART_SECONDS = 1.0
MAX_RESTART_SECONDS = 30.0
HEALTHY_AFTER_SECONDS = 10.0
STOP_SECONDS = 30.0
_PR_SET_PDEATHSIG = 1
# The child reports its loops' health every REPORT_SECONDS. A report older than
# STALE_REPORT_SECONDS counts as a failure, and so does none at all FIRST_REPORT_SECONDS
# after the child started (its start-up: opening, maybe migrating, the database).
REPORT_SECONDS = 1.0
STALE_REPORT_SECONDS = 5.0
FIRST_REPORT_SECONDS = 30.0


class ChildReport(msgspec.Struct, frozen=True):
    """What the child writes of its loops (None: it runs none of that kind)."""

    written_at: float  # time.monotonic(): one clock for every process on Linux
    fold: LoopsHealth | None
    segments: LoopsHealth | None


_reports = msgspec.msgpack.Decoder(ChildReport)


class FoldProcess:
    """A fold loop (``background.FoldLoop``) whose work is done by a supervised child;
    its health is the child's: failing since it first exited, else what the child last
    reported of its fold loops (failing when that report is stale)."""

    def __init__(self, settings: Settings) -> None:
        self._command = [
            *(sys.executable, "-m", "eventfold", "worker", "--fold-of", str(os.getpid()))
        ]
        self._environment = {**os.environ, **settings.as_environment()}
        self._process = FoldHealth()  # the child's own: running, exited
        self._report: Path | None = None  # made by ``start``, removed by ``stop``
        self._spawned_at = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the child is replaced or stopped under it
        self._child: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None

    @property
    def health(self) -> FoldHealth:
        fold = self.child_loops(lambda report: report.fold)
        return self._process if fold is None else FoldHealth.reported(fold)

    def child_loops(self, part: Callable[[ChildReport], LoopsHealth | None]) -> LoopsHealth | None:
        """That part of the running child's latest report (reads a file); a failure when
        the report is stale or the child is not running; None before its first report."""
        own = self._process
        if not own.running or own.last_error is not None or self._report is None:
            return LoopsHealth(own.running, own.failing_for(), own.last_error)
        try:
            report: ChildReport | None = _reports.decode(self._report.read_bytes())
        except (OSError, msgspec.DecodeError):
            report = None
        now = time.monotonic()
        if report is not None and now - report.written_at > STALE_REPORT_SECONDS:
            silent = now - report.written_at
        elif report is None and now - self._spawned_at > FIRST_REPORT_SECONDS:
            silent = now - self._spawned_at
        else:
            return None if report is None else part(report)
        return LoopsHealth(
            True, silent, f"the fold process has not reported its loops' health for {silent:.0f} s"
        )

    def start(self) -> None:
        self._report = Path(tempfile.mkdtemp(prefix="eventfold-fold-")) / "health"
        self._command += ["--report-health", str(self._report)]
        self._thread = threading.Thread(
            target=self._supervise, name="eventfold-fold-process", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Asks the child to finish its step and stop (SIGTERM), killing it after
        ``STOP_SECONDS``; waits for it."""
        with self._lock:
            self._stop.set()
            child = self._child
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                logger.warning("the fold process did not stop in %s s; killing it", STOP_SECONDS)
                child.kill()
                child.wait()
        if self._thread is not None:
            self._thread.join()
        if self._report is not None:
            shutil.rmtree(self._report.parent, ignore_errors=True)

    def _supervise(self) -> None:
        delay = RESTART_SECONDS
        while True:
            with self._lock:
                if self._stop.is_set():
                    return
                if self._report is not None:  # a folder for this child's reports alone
                    shutil.rmtree(self._report.parent, ignore_errors=True)
                    self._report.parent.mkdir()
                self._spawned_at = time.monotonic()
                try:
                    child = self._child = self._spawn()
                except (OSError, subprocess.SubprocessError) as error:
                    child, outcome = None, f"the fold process could not start ({error})"
            if child is not None:
                self._process.running = True
                try:
                    child.wait(HEALTHY_AFTER_SECONDS)
                except subprocess.TimeoutExpired:
                    self._process.succeeded()
                    delay = RESTART_SECONDS
                    child.wait()
                self._process.running = False
                if self._stop.is_set():
                    return
                outcome = f"the fold process exited with code {child.returncode}"
            failure = RuntimeError(f"{outcome}; starting it again in {delay:g} s")
            self._process.failed(failure)
            logger.error("%s", failure)
            self._stop.wait(delay)
            delay = min(2 * delay, MAX_RESTART_SECONDS)

    def _spawn(self) -> subprocess.Popen[bytes]:
        # stdout: the worker's banner, which would only interleave with the server's
        # output; its log lines (stderr) go where the server's go.
        return subprocess.Popen(
            self._command,
            env=self._environment,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop_with(parent: int) -> None:
    """In the child: be sent SIGTERM when the thread that started it ends (Linux: the
    server died), and exit at once if the server is already gone."""
    if sys.platform.startswith("linux"):
        if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            logger.warning(
                "cannot ask to be stopped with the server (errno %s)", ctypes.get_errno()
            )
    if os.getppid() != parent:
        sys.exit(f"eventfold worker: the server (process {parent}) is gone")


class ChildSegmentLoops:
    """The segment loops of a server's fold process, as the server sees them: their
    health as the child reports it, and the timer's lag from the database. The child's
    backfill looks for new segments every second (``wake`` cannot reach it)."""

    def __init__(
        self, process: FoldProcess, store: SegmentStore, clock: Callable[[], int] = now_ms
    ) -> None:
        self._process = process
        self._store = store
        self._clock = clock

    def start(self) -> None:
        """The child starts them."""

    def stop(self) -> None:
        """The child stops them."""

    def wake(self) -> None:
        """The child's backfill looks again within a second."""

    def loops_health(self) -> LoopsHealth:
        loops = self._process.child_loops(lambda report: report.segments)
        return LoopsHealth(True, 0.0, None) if loops is None else loops  # None: starting

    def health(self) -> SegmentLoopsHealth:
        return SegmentLoopsHealth(self.loops_health(), timer_lag(self._store, self._clock()))


@contextmanager
def reporting_health(path: str | None, work: BackgroundWork) -> Iterator[None]:
    """In the child: writes ``work``'s loops' health to ``path`` every REPORT_SECONDS
    (replacing the file whole) while the block runs, and removes its folder at the end;
    nothing when ``path`` is None."""
    if path is None:
        yield
        return
    stop = threading.Event()

    def report() -> None:
        # The first after a second: the loops have started by then.
        target, scratch = Path(path), Path(path + ".new")
        while not stop.wait(REPORT_SECONDS):
            try:
                segments = work.segments
                found = ChildReport(
                    time.monotonic(),
                    work.fold_health(),
                    segments.loops_health() if segments is not None else None,
                )
                scratch.write_bytes(msgspec.msgpack.encode(found))
                scratch.replace(target)
            except Exception as error:  # the server then sees a stale report, and says so
                logger.warning("cannot write the fold's health report: %s", error)

    thread = threading.Thread(target=report, name="eventfold-health-report", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        # Also when the server was killed, which removes it no more (it makes the
        # folder again for the next child).
        shutil.rmtree(Path(path).parent, ignore_errors=True)
