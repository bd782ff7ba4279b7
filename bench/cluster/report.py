"""What a scenario showed, as its own line and as a row of the run's table."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise

from bench.cluster.check import Verdict
from bench.cluster.ledger import Ledger

REASON_CHARACTERS = 100
# How long a cut-off API node may take, after the heal, to answer 202 again.
RECOVERY_SECONDS = 30.0


@dataclass
class Outcome:
    name: str
    what: str
    fault_seconds: float
    verdict: Verdict
    freshness_after_healing: Freshness | None
    refused_during_fault: int  # 503 answers
    unanswered_during_fault: int  # no answer, or another 5xx
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.verdict.lost or self.verdict.duplicated or self.problems)

    def line(self, bound: float) -> str:
        v = self.verdict
        worst = self.freshness_after_healing
        fresh = _seconds(worst)
        if worst is not None and worst.seconds > bound:
            fresh += (
                f", OVER the {bound:g} s bound: {worst.what}, answered 202 at "
                f"{worst.acknowledged:+.1f} s from the heal, in its profile at "
                f"+{worst.visible:.1f} s"
            )
        elif worst is not None:
            fresh += f" (within the {bound:g} s bound)"
        parts = [
            f"{v.acknowledged:,} events acknowledged, {v.lost} lost, {v.duplicated} duplicated",
            f"worst freshness after healing {fresh}",
            f"{self.refused_during_fault} answered 503 and {self.unanswered_during_fault} "
            f"unanswered during the {self.fault_seconds:.1f} s fault",
        ]
        if v.stored_unacknowledged:
            parts.append(f"{v.stored_unacknowledged} events stored without a 202 (allowed)")
        if v.lost:
            parts.append(
                f"of the lost, {v.missing} not read back and {v.profile_shortfall} stored but "
                f"missing from their profile's eventCount ({v.split_people} people's events "
                "name more than one profile)"
            )
        if v.half_stored_batches or v.unfolded:
            parts.append(f"{v.half_stored_batches} half-stored batches, {v.unfolded} unfolded")
        parts += self.notes + [f"PROBLEM: {problem}" for problem in self.problems]
        return f"[{self.name}] {self.what}: " + "; ".join(parts)


@dataclass(frozen=True)
class Freshness:
    """The worst delay, counted from the heal, until an acknowledged event was in its
    profile; and which event that was."""

    seconds: float
    what: str  # "probe" or the batch id
    acknowledged: float  # its 202, relative to the heal (negative: before it)
    visible: float  # when it was seen in its profile, relative to the heal


def freshness_after(ledger: Ledger, healed: float, checked: float) -> Freshness | None:
    """Over probe events and load batches (by their markers), acknowledged before or
    after the heal; one never seen counts as seen when the check ended (``checked``)."""
    samples = [("probe", probe.acknowledged, probe.visible) for probe in ledger.probes]
    samples += [
        (batch, acknowledged, ledger.visible.get(batch))
        for batch, acknowledged in ledger.acknowledged.items()
        if batch in ledger.slots
    ]
    worst = None
    for what, acknowledged, visible in samples:
        seen = checked if visible is None else visible
        if seen < healed:
            continue
        delay = seen - max(acknowledged, healed)
        if worst is None or delay > worst.seconds:
            worst = Freshness(delay, what, acknowledged - healed, seen - healed)
    return worst


def probe_freshness(ledger: Ledger) -> str:
    """The probe's freshness over the whole scenario, fault and all: from its 202 until
    its profile showed it."""
    delays = sorted(p.visible - p.acknowledged for p in ledger.probes if p.visible is not None)
    unseen = sum(p.visible is None for p in ledger.probes)
    if not delays:
        return f"no probe event seen ({unseen} unseen)"
    p99 = delays[min(len(delays) - 1, int(0.99 * len(delays)))]
    return (
        f"probe freshness over the scenario p50 {delays[len(delays) // 2]:.2f} s, p99 "
        f"{p99:.2f} s, max {delays[-1]:.2f} s ({len(delays)} probes, {unseen} not seen)"
    )


def longest_without_202(ledger: Ledger, start: float, end: float) -> tuple[float, float]:
    """The longest stretch within [start, end] in which no request was answered 202:
    (its length, its start relative to ``start``)."""
    answered = sorted(a.done for a in ledger.attempts if a.status == 202 and start <= a.done <= end)
    edges = [start, *answered, end]
    length, at = max((b - a, a - start) for a, b in pairwise(edges))
    return length, at


def answers_during(ledger: Ledger, start: float, end: float) -> tuple[int, int, str]:
    """503s, requests unanswered or answered another 5xx, in [start, end]; and what the
    refusals said, the most frequent first."""
    during = [a for a in ledger.attempts if start <= a.done and a.sent <= end]
    refused = sum(a.status == 503 for a in during)
    unanswered = sum(a.status == 0 or (a.status >= 500 and a.status != 503) for a in during)
    said: Counter[str] = Counter()
    example: dict[str, str] = {}  # one refusal as it was said, figures and all
    for a in during:
        if a.status == 202:
            continue
        text = f"{a.status} {a.reason}" if a.status else f"no answer ({a.reason})"
        said[_general(text)] += 1
        example.setdefault(_general(text), text[:REASON_CHARACTERS])
    reasons = "; ".join(f"{count} x like {example[kind]!r}" for kind, count in said.most_common(3))
    return refused, unanswered, reasons


def by_node(ledger: Ledger, start: float, end: float, nodes: list[str]) -> str:
    """Per API node: its requests answered 202 of those sent in [start, end], and the
    median time to a 202."""
    parts = []
    for number, name in enumerate(nodes):
        mine = [a for a in ledger.attempts if a.node == number and start <= a.sent <= end]
        accepted = sorted(a.done - a.sent for a in mine if a.status == 202)
        median = f", median {accepted[len(accepted) // 2] * 1000:.0f} ms" if accepted else ""
        parts.append(f"{name} {len(accepted)}/{len(mine)} 202{median}")
    return ", ".join(parts)


def judge_cut_off_node(
    ledger: Ledger, node: int, name: str, injected: float, healed: float
) -> tuple[list[str], list[str]]:
    """Problems and notes: while cut off the node answers (503), never 202; after the
    heal it answers 202 again by itself. Only requests sent and answered while it was
    cut off count: one sent then may rightly be answered 202 after the heal."""
    problems, notes = [], []
    mine = [a for a in ledger.attempts if a.node == node]
    during = [a for a in mine if a.sent >= injected and a.done <= healed]
    accepted = [a for a in during if a.status == 202]
    if accepted:
        problems.append(
            f"{name} answered 202 to {len(accepted)} requests sent while it was cut off "
            f"(batches {', '.join(a.batch for a in accepted[:5])})"
        )
    if not any(a.status == 503 for a in during):
        problems.append(f"{name} answered no request with 503 while it was cut off")
    statuses = dict(sorted(Counter(a.status for a in during).items()))  # status: how often
    notes.append(f"{name} answered {statuses} while cut off")
    after = [a.done - healed for a in mine if a.sent >= healed and a.status == 202]
    if not after or min(after) > RECOVERY_SECONDS:
        problems.append(
            f"{name} did not answer 202 again within {RECOVERY_SECONDS:g} s of the heal"
        )
    else:
        notes.append(f"{name} answered 202 again {min(after):.1f} s after")
    return problems, notes


def _general(reason: str) -> str:
    """The message with its figures left out, so that alike refusals count together."""
    return re.sub(r"\d+(\.\d+)?", "N", reason)[:REASON_CHARACTERS]


def table(outcomes: list[Outcome]) -> str:
    header = (
        "| scenario | events acknowledged | lost | duplicated "
        "| worst freshness after healing | 503s during the fault |"
    )
    rows = [header, "|---|---:|---:|---:|---:|---:|"]
    for outcome in outcomes:
        v = outcome.verdict
        rows.append(
            f"| {outcome.name} | {v.acknowledged:,} | {v.lost} | {v.duplicated} "
            f"| {_seconds(outcome.freshness_after_healing)} | {outcome.refused_during_fault} |"
        )
    return "\n".join(rows)


def _seconds(value: Freshness | None) -> str:
    return "none pending" if value is None else f"{value.seconds:.2f} s"
