"""``eventfold serve``'s fold in a child process (``Settings.fold_process``): an
``eventfold worker`` with the server's settings, started with the server, started again
when it exits, stopped with it.

Why a process: a fold on a thread of the server shares one interpreter lock with the
request path, so the two take turns on one core. In a process of its own the fold has a
core to itself; the log (the database's batch table, or JetStream) is already the
hand-over between them, and SQLite's single writer is shared through its file lock
(docs/performance.md, "The fold in a process of its own", has the figures).

The child runs what ``eventfold worker`` runs: the fold loops, the segments' backfill and
timer, and webhook deliveries. On Linux it is asked to stop (SIGTERM) when the server
dies, even by SIGKILL, so no fold outlives its server.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

from eventfold.services.fold import FoldHealth
from eventfold.settings import Settings

logger = logging.getLogger("eventfold.fold_process")

RESTART_SECONDS = 1.0
# A child that has run this long since it started counts as healthy again.
HEALTHY_AFTER_SECONDS = 10.0
STOP_SECONDS = 30.0
_PR_SET_PDEATHSIG = 1


class FoldProcess:
    """A fold loop (``background.FoldLoop``) whose work is done by a supervised child."""

    def __init__(self, settings: Settings) -> None:
        self._command = [sys.executable, "-m", "eventfold", "worker"]
        self._environment = {**os.environ, **settings.environment()}
        self.health = FoldHealth()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the child is replaced or stopped under it
        self._child: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        """The running child's process id (None between a child's exit and its restart)."""
        child = self._child
        return child.pid if child is not None and child.poll() is None else None

    def start(self) -> None:
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

    def _supervise(self) -> None:
        self.health.running = True
        try:
            while True:
                with self._lock:
                    if self._stop.is_set():
                        return
                    child = self._child = self._spawn()
                try:
                    child.wait(HEALTHY_AFTER_SECONDS)
                    code: int | None = child.returncode
                except subprocess.TimeoutExpired:
                    self.health.succeeded()
                    code = child.wait()
                if self._stop.is_set():
                    return
                error = RuntimeError(f"the fold process exited with code {code}; restarting it")
                self.health.failed(error)
                logger.error("%s", error)
                self._stop.wait(RESTART_SECONDS)
        finally:
            self.health.running = False

    def _spawn(self) -> subprocess.Popen[bytes]:
        # stdout: the worker's banner, which would only interleave with the server's
        # output; its log lines (stderr) go where the server's go.
        return subprocess.Popen(
            self._command,
            env=self._environment,
            stdout=subprocess.DEVNULL,
            preexec_fn=_stopped_with(os.getpid()),
        )


def _stopped_with(parent: int) -> Callable[[], None] | None:
    """Run in the child before it executes: SIGTERM when the thread that started it
    ends (Linux: the server died), or at once if the server is already gone."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def ask() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(0)

    return ask
