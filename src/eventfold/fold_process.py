"""``eventfold serve``'s fold in a child process (``Settings.fold_process``): an
``eventfold worker --fold-of PID`` with the server's settings, started with the server,
started again when it exits, stopped with it.

Why a process: a fold on a thread of the server shares one interpreter lock with the
request path, so the two take turns on one core. In a process of its own the fold has a
core to itself; the log (the database's batch table, or JetStream) is already the
hand-over between them, and SQLite's one writer lock is shared through its file
(docs/performance.md, "The fold in a process of its own", has the figures).

The child runs the fold loops and the segments' backfill and timer; webhook deliveries
stay with the server (``deliver_in_server``). It has a session of its own, so a Ctrl+C
meant for the server reaches it only through the server's orderly stop; on Linux it asks
the kernel to stop it (SIGTERM) when the server dies, even by SIGKILL.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading

from eventfold.services.fold import FoldHealth
from eventfold.settings import Settings

logger = logging.getLogger("eventfold.fold_process")

# A child that exits is started again after RESTART_SECONDS, doubled for each exit in a
# row up to MAX_RESTART_SECONDS; one that has run HEALTHY_AFTER_SECONDS counts as well.
RESTART_SECONDS = 1.0
MAX_RESTART_SECONDS = 30.0
HEALTHY_AFTER_SECONDS = 10.0
STOP_SECONDS = 30.0
_PR_SET_PDEATHSIG = 1


class FoldProcess:
    """A fold loop (``background.FoldLoop``) whose work is done by a supervised child;
    its health is the child's: running while it runs, failing since it first exited."""

    def __init__(self, settings: Settings) -> None:
        self._command = [sys.executable, "-m", "eventfold", "worker", "--fold-of", str(os.getpid())]
        self._environment = {**os.environ, **settings.as_environment()}
        self.health = FoldHealth()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the child is replaced or stopped under it
        self._child: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None

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
        delay = RESTART_SECONDS
        while True:
            with self._lock:
                if self._stop.is_set():
                    return
                try:
                    child = self._child = self._spawn()
                except (OSError, subprocess.SubprocessError) as error:
                    child, outcome = None, f"the fold process could not start ({error})"
            if child is not None:
                self.health.running = True
                try:
                    child.wait(HEALTHY_AFTER_SECONDS)
                except subprocess.TimeoutExpired:
                    self.health.succeeded()
                    delay = RESTART_SECONDS
                    child.wait()
                self.health.running = False
                if self._stop.is_set():
                    return
                outcome = f"the fold process exited with code {child.returncode}"
            failure = RuntimeError(f"{outcome}; starting it again in {delay:g} s")
            self.health.failed(failure)
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
