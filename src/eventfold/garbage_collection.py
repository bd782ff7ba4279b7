"""How a server or worker process sets Python's cyclic garbage collector.

The fold makes and drops many small containers (decoded events, profile states,
segment states), and with Python's default thresholds the collector ran every 700 of
them and walked every long-lived object at each full collection: measured with
``bench.fold_inprocess`` (SQLite, 20,000 events of 5,000 people), it took 2 to 2.7 s of a
3.6 to 6.3 s fold, and 6 to 8 s when the request path handed its validated events to the
fold (held objects are walked too). With a first threshold of 50,000 and the start-up's
objects frozen out of its walks it took about 0.5 to 0.9 s. Reference counting frees
nearly everything the fold drops; only cycles wait for the collector, and these are rare.
"""

from __future__ import annotations

import gc

FIRST_GENERATION_THRESHOLD = 50_000


def tune_for_the_fold() -> None:
    """Called once a process has started (everything it keeps for life is made)."""
    gc.collect()
    gc.freeze()  # what start-up made is never walked again
    _, second, third = gc.get_threshold()
    gc.set_threshold(FIRST_GENERATION_THRESHOLD, second, third)
