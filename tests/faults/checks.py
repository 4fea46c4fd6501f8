"""What the consumer and the operator must see after the faults, counted into one Report."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .writer import TABLES, Change

SECRETS = ("c2VjcmV0LWtleQ==", "PWD=x")  # the peers' SAS key and SQL password: never in any output


@dataclass
class Report:
    seed: int
    written: int = 0
    delivered: int = 0
    duplicates: int = 0  # a MessageId (or a change) delivered more than once
    lost: int = 0
    unexpected: int = 0  # delivered but never committed
    order_violations: int = 0
    deduplicated: int = 0  # resends the peer's duplicate detection dropped
    runs: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)  # wrong exit codes, tracebacks, leaked secrets, hangs, orphans
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.lost or self.unexpected or self.order_violations or self.problems)

    def as_dict(self) -> dict[str, Any]:
        """The counts as plain JSON types (dataclasses.asdict would turn the Counter inside out)."""
        return {**{k: v for k, v in vars(self).items() if k != "kills"}, "kills": dict(self.kills), "ok": self.ok}

    def summary(self) -> str:
        kills = ", ".join(f"{k} {v}" for k, v in sorted(self.kills.items())) or "none"
        lines = [f"seed {self.seed}: {self.runs} runs, {sum(self.kills.values())} kills ({kills})",
                 f"changes written {self.written}, delivered {self.delivered}, lost {self.lost}, duplicates {self.duplicates}, "
                 f"unexpected {self.unexpected}, order violations {self.order_violations}; resends dropped by duplicate detection {self.deduplicated}"]
        lines += [f"problem: {p}" for p in self.problems[:20]]
        lines += [f"example: {e}" for e in self.examples[:20]]
        return "\n".join(lines)


def check_delivery(report: Report, table: str, expected: list[Change], messages: list[tuple[str, dict[str, Any]]]) -> None:
    """Count lost, duplicated, unexpected and out-of-order changes of one queue into `report`."""
    report.written += len(expected)
    report.delivered += len(messages)
    index = {change: i for i, change in enumerate(expected)}
    ids: Counter[str] = Counter()
    seen: set[Change] = set()
    last = -1
    for message_id, body in messages:
        change = Change(table, body["metadata"]["OperationType"], body["data"][TABLES[table]], body["data"]["Seq"])
        ids[message_id] += 1
        if ids[message_id] > 1 or change in seen:
            report.duplicates += 1
            report.examples.append(f"{table}: delivered twice: {change} (MessageId {message_id})")
            continue
        seen.add(change)
        if change not in index:
            report.unexpected += 1
            report.examples.append(f"{table}: delivered but never committed: {change}")
            continue
        if index[change] <= last:
            report.order_violations += 1
            report.examples.append(f"{table}: {change} arrived after {expected[last]}")
        last = max(last, index[change])
    missing = [c for c in expected if c not in seen]
    report.lost += len(missing)
    report.examples += [f"{table}: lost {c}" for c in missing[:5]]


def check_output(text: str, code: int, problem: Callable[[str], None]) -> None:
    """What every dstream run must keep to: no traceback, no secret, failures end in one Error: line."""
    if "Traceback" in text:
        problem("a traceback on stderr")
    for secret in SECRETS:
        if secret in text:
            problem(f"a secret ({secret[:4]}...) in the output")
    lines = [line for line in text.splitlines() if line.strip()]
    if code > 0 and not (lines and lines[-1].startswith("Error: ") and sum(line.startswith("Error:") for line in lines) == 1):
        problem("a failure that does not end in exactly one Error: line")


def tail(log: Path, n: int = 3) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return " | ".join(lines[-n:])
