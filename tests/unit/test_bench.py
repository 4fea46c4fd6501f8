"""The benchmark scripts' own arithmetic and docs (issue 9): alternating rounds, medians, README coverage."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

import _measure  # noqa: E402
import asb_send  # noqa: E402
import relay  # noqa: E402


def test_alternating_runs_every_side_each_round_and_swaps_the_lead() -> None:
    order = list(_measure.alternating(("a", "b"), 4))
    assert order == [(0, "a"), (0, "b"), (1, "b"), (1, "a"), (2, "a"), (2, "b"), (3, "b"), (3, "a")]


def test_rate_ratio_is_the_ratio_of_the_medians() -> None:
    # candidate median 2.0 s, baseline median 1.0 s: the candidate moves half as many messages per second
    assert _measure.rate_ratio([9.0, 2.0, 1.9], [1.0, 0.1, 5.0]) == pytest.approx(0.5)


def test_relay_summary_keeps_its_fields() -> None:
    assert relay.summarise([2.0, 1.0, 3.0], [0.5, 0.7, 0.6], 1000) == {
        "median_s": 2.0, "min_s": 1.0, "max_s": 3.0, "times_s": [2.0, 1.0, 3.0],
        "cpu_median_s": 0.6, "msgs_per_s": 500.0, "us_per_msg": 2000.0,
    }


def test_asb_send_alternates_seven_rounds_and_compares_medians(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    plain_times = iter([1.0, 1.0, 5.0, 1.0, 1.0, 1.0, 1.0])  # one outlier: the median ignores it
    provider_times = iter([2.0] * 7)

    def plain(peers: object, count: int) -> float:
        calls.append("plain")
        return next(plain_times)

    def provider(peers: object, tables: list[str], count: int) -> float:
        calls.append("provider")
        return next(provider_times)

    monkeypatch.setattr(asb_send, "run_plain", plain)
    monkeypatch.setattr(asb_send, "run_provider", provider)
    args = asb_send.build_parser().parse_args([])
    assert args.repeat == 7
    report = asb_send.compare(None, args.count, args.repeat)  # type: ignore[arg-type]
    assert calls == ["plain", "provider", "provider", "plain"] * 3 + ["plain", "provider"]
    assert report["plain"]["median_s"] == 1.0 and report["provider"]["median_s"] == 2.0
    assert report["ratio"] == pytest.approx(0.5)


def scripts() -> list[str]:
    return sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("script", scripts())
def test_bench_readme_says_how_to_run_every_script(script: str) -> None:
    readme = (BENCH / "README.md").read_text()
    assert re.search(rf"^python bench/{re.escape(script)}\b", readme, re.MULTILINE), f"bench/README.md has no `python bench/{script}` line"
