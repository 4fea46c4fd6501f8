"""The consumer checks themselves can fail: lost, duplicated, reordered, unexpected changes and bad output."""

from __future__ import annotations

from typing import Any

from .checks import Report, check_delivery, check_output
from .writer import Change

JOURNAL = [Change("Persons", "Insert", 1, 1), Change("Persons", "Update", 1, 2), Change("Persons", "Insert", 2, 3), Change("Persons", "Delete", 1, 2)]


def message(change: Change, message_id: str | None = None) -> tuple[str, dict[str, Any]]:
    body = {"data": {"PersonID": change.key, "Seq": change.seq}, "metadata": {"OperationType": change.op}}
    return message_id or f"{change.op}-{change.key}-{change.seq}", body


def checked(messages: list[tuple[str, dict[str, Any]]]) -> Report:
    report = Report(seed=0)
    check_delivery(report, "Persons", JOURNAL, messages)
    return report


def test_every_change_once_in_order_passes() -> None:
    report = checked([message(c) for c in JOURNAL])
    assert report.ok and report.written == report.delivered == 4


def test_a_missing_change_is_lost() -> None:
    report = checked([message(c) for c in JOURNAL if c.op != "Update"])
    assert (report.lost, report.ok) == (1, False)


def test_a_message_id_delivered_twice_is_a_duplicate() -> None:
    report = checked([message(c) for c in JOURNAL] + [message(JOURNAL[0])])
    assert (report.duplicates, report.ok) == (1, False)


def test_the_same_change_under_another_message_id_is_a_duplicate() -> None:
    report = checked([message(c) for c in JOURNAL] + [message(JOURNAL[2], "another-id")])
    assert (report.duplicates, report.ok) == (1, False)


def test_changes_out_of_commit_order_are_order_violations() -> None:
    report = checked([message(c) for c in (JOURNAL[1], JOURNAL[0], JOURNAL[2], JOURNAL[3])])
    assert (report.order_violations, report.lost, report.ok) == (1, 0, False)


def test_a_change_never_committed_is_unexpected() -> None:
    report = checked([message(c) for c in JOURNAL] + [message(Change("Persons", "Insert", 9, 9))])
    assert (report.unexpected, report.ok) == (1, False)


def test_output_rules() -> None:
    problems: list[str] = []
    check_output("[input:mssql-cdc] started\nError: provider failed (see its log)\n", 5, problems.append)
    check_output("run stopped on request\n", 0, problems.append)
    assert problems == []
    check_output("Traceback (most recent call last):\nError: x\n", 1, problems.append)
    check_output("Error: x\nmore\n", 5, problems.append)
    check_output("Endpoint=sb://h;SharedAccessKey=c2VjcmV0LWtleQ==\n", 0, problems.append)
    assert len(problems) == 3, problems
