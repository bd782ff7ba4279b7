"""The fold alone, in-process: append N realistic events (no HTTP), then fold them all
with THREADS fold threads of this process, and print events/s and this process's CPU
per event (PostgreSQL's own CPU is not counted here; bench/fold_rate.py counts it).

    python -m bench.fold_inprocess sqlite|postgres [EVENTS] [PEOPLE] [THREADS] \
        [handoff] [default-gc]

With ``handoff`` the events are appended as the server appends them when it folds in
its own process: the fold takes them as validated (storage/decoded_batches.py) instead of
reading and decoding their records. The garbage collector is set as a server process
sets it (eventfold/garbage_collection.py), unless ``default-gc``.

It imports whichever eventfold is first on the path, so the same command measures an
older tree side by side (``PYTHONPATH=/path/to/old/src``): it folds with ``FoldService``
where there is one, else with the storage's own ``fold_pending``.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack

import msgspec

from bench.batches import realistic_event
from bench.processes import fresh_postgres_database
from eventfold.clock import now_ms
from eventfold.domain.keys import hash_secret
from eventfold.domain.limits import Limits
from eventfold.domain.validation import BatchValidator
from eventfold.settings import Settings
from eventfold.storage import open_storage
from eventfold.storage.base import Storage

POSTGRES = "postgresql://postgres@127.0.0.1:5432"


def fold_step(storage: Storage) -> Callable[[int], int]:
    try:
        from eventfold.services.fold import FoldService
    except ImportError:  # an older tree: the storage folded by itself
        step: Callable[[int], int] = storage.fold_pending  # type: ignore[attr-defined]
        return step
    return FoldService(storage).fold_pending


def main() -> None:
    backend = sys.argv[1]
    given = [int(argument) for argument in sys.argv[2:5]]
    events, people, threads = given + [30_000, 10_000, 1][len(given) :]
    hand_off = "handoff" in sys.argv[5:]
    if "default-gc" not in sys.argv[5:]:
        try:
            from eventfold.garbage_collection import tune_for_the_fold
        except ImportError:  # an older tree: Python's defaults
            pass
        else:
            tune_for_the_fold()
    with ExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite:///{stack.enter_context(tempfile.TemporaryDirectory())}/f.db"
        else:
            url = stack.enter_context(fresh_postgres_database(POSTGRES, "fold_inprocess"))
        storage = open_storage(Settings(database_url=url, fold_in_server=hand_off))
        if hand_off:  # every event held, as if folded while appended
            from eventfold.storage.decoded_batches import DecodedBatches

            storage.decoded_batches = DecodedBatches(max_events=events, max_age_seconds=3600)  # type: ignore[attr-defined]
        stack.callback(storage.close)
        secret = storage.create_key("bench", now_ms())[1]
        principal = storage.find_key(hash_secret(secret))
        assert principal is not None
        validator, rng = BatchValidator(Limits()), random.Random(5)

        async def load() -> None:
            for _ in range(events // 100):
                batch = [realistic_event(rng, people=people) for _ in range(100)]
                body = msgspec.json.encode({"events": batch})
                if hand_off:
                    accepted, sources = validator.validate_batch(body, now_ms())
                    await storage.append(principal.account_id, now_ms(), accepted, None, sources)
                else:
                    accepted = validator.validate(body, now_ms())
                    await storage.append(principal.account_id, now_ms(), accepted)

        asyncio.run(load())
        step, folded = fold_step(storage), []

        def fold_all() -> None:
            count = 0
            while got := step(2_000):
                count += got
            folded.append(count)

        started, cpu = time.perf_counter(), time.process_time()
        workers = [threading.Thread(target=fold_all) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        total = sum(folded)
        print(
            f"{backend}, {threads} thread(s), {people} people"
            f"{', hand-off' if hand_off else ''}"
            f"{', default gc' if 'default-gc' in sys.argv[5:] else ''}: folded {total} events in "
            f"{seconds:.2f} s = {total / seconds:,.0f} events/s; "
            f"{cpu / total * 1e6:.1f} µs of this process's CPU per event"
        )


if __name__ == "__main__":
    main()
