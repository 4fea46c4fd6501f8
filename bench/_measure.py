"""What the side-by-side benchmarks share: alternating the sides over rounds and comparing medians."""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence


def alternating(sides: Sequence[str], rounds: int) -> Iterator[tuple[int, str]]:
    """(round, side) for `rounds` runs of every side in A B, B A, A B ... order: each side leads
    in every other round, so a drift in the machine's load or a warming cache favours neither."""
    for rnd in range(rounds):
        for side in sides if rnd % 2 == 0 else tuple(reversed(sides)):
            yield rnd, side


def timing_summary(times: list[float], count: int) -> dict[str, object]:
    """The median run, the spread, and the rate at the median for `count` messages per run."""
    median = statistics.median(times)
    return {
        "median_s": round(median, 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
        "times_s": [round(t, 4) for t in times],
        "msgs_per_s": round(count / median, 1),
        "us_per_msg": round(median * 1e6 / count, 3),
    }


def rate_ratio(candidate: list[float], baseline: list[float]) -> float:
    """candidate msgs/s divided by baseline msgs/s, at the median wall times (same count per run)."""
    return statistics.median(baseline) / statistics.median(candidate)
