"""The chart in docs/performance.md: throughput against p99 latency as load grows."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def draw(sweep: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
    throughput = [row["events_per_second"] / 1000 for row in sweep]
    p99 = [row["p99_ms"] for row in sweep]
    axes.plot(throughput, p99, marker="o")
    for row, x, y in zip(sweep, throughput, p99, strict=True):
        axes.annotate(
            f"{row['connections']} conn", (x, y), textcoords="offset points", xytext=(6, 4)
        )
    axes.set_xlabel("accepted events/s (thousands), 100-event batches")
    axes.set_ylabel("request latency p99 (ms)")
    axes.set_title("eventfold on SQLite: throughput against p99 latency")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
