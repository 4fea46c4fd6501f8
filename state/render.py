"""Plans and status as text for people (Terraform's shapes) and JSON for machines.

Pure functions of the data; colour is a flag decided by the CLI.
"""

from __future__ import annotations

import json
from typing import Any

from state.plan import Change, Drift, Plan

GREEN, YELLOW, RED, BOLD, RESET = "\033[32m", "\033[33m", "\033[31m", "\033[1m", "\033[0m"
SYMBOL = {"create": "+", "update": "~", "replace": "-/+", "delete": "-", "adopt": "<="}
VERB = {
    "create": "will be created",
    "update": "will be updated in-place",
    "replace": "must be replaced",
    "delete": "will be destroyed",
    "adopt": "will be adopted (taken over as it is)",
}
COLOUR = {"create": GREEN, "update": YELLOW, "replace": RED, "delete": RED, "adopt": GREEN}
NO_CHANGES = "No changes. Your infrastructure matches the configuration."


class Painter:
    def __init__(self, colour: bool):
        self.colour = colour

    def __call__(self, text: str, code: str) -> str:
        return f"{code}{text}{RESET}" if self.colour else text


def plan_text(plan: Plan, colour: bool = False) -> str:
    paint = Painter(colour)
    out: list[str] = []
    for warning in plan.warnings:
        out.append(paint("Warning: ", YELLOW) + warning)
    if plan.warnings:
        out.append("")
    if plan.drift:
        out.append(paint("Objects have changed outside of dstream", BOLD))
        out.append("")
        for drift in plan.drift:
            out.extend(_drift(drift, paint))
            out.append("")
    if not plan.changes:
        out.append(paint(NO_CHANGES, GREEN))
        return "\n".join(out) + "\n"
    out.append("dstream will perform the following actions:")
    out.append("")
    for change in plan.changes:
        out.extend(_change(change, paint))
        out.append("")
    s = plan.summary()
    adopt = f"{s['adopt']} to adopt, " if s["adopt"] else ""
    out.append(paint("Plan: ", BOLD) + f"{adopt}{s['add']} to add, {s['change']} to change, {s['destroy']} to destroy.")
    replaced = [c for c in plan.changes if c.action == "replace"]
    if replaced:
        out.append("")
        out.append(paint("Warning: ", RED) + f"{len(replaced)} resource(s) will be replaced: a replacement destroys the old one and everything it holds.")
    return "\n".join(out) + "\n"


def _change(change: Change, paint: Painter) -> list[str]:
    symbol = paint(SYMBOL[change.action], COLOUR[change.action])
    lines = [paint(f"  # {change.address} {VERB[change.action]}", BOLD)]
    if change.reason:
        lines.append(f"  # ({change.reason})")
    lines.append(f"  {symbol} resource \"{change.type}\" \"{change.name}\" {{")
    lines.extend(_attributes(change, paint))
    lines.append("    }")
    return lines


def _attributes(change: Change, paint: Painter) -> list[str]:
    before, after = change.before or {}, change.after or {}
    keys = sorted(set(before) | set(after))
    width = max((len(k) for k in keys), default=0)
    lines = []
    for key in keys:
        old, new = before.get(key), after.get(key)
        forces = paint(" # forces replacement", RED) if key in change.replace_paths else ""
        name = key.ljust(width)
        if change.action in ("create", "adopt"):
            lines.append(f"      {paint('+', GREEN)} {name} = {_value(new)}")
        elif change.action == "delete":
            lines.append(f"      {paint('-', RED)} {name} = {_value(old)}")
        elif old != new:
            lines.append(f"      {paint('~', YELLOW)} {name} = {_value(old)} -> {_value(new)}{forces}")
    return lines


def _drift(drift: Drift, paint: Painter) -> list[str]:
    if drift.after is None:
        return [paint(f"  # {drift.address} has been deleted", BOLD), f"  {paint('-', RED)} resource \"{drift.type}\" \"{drift.name}\""]
    lines = [paint(f"  # {drift.address} has changed", BOLD)]
    for key in sorted(set(drift.before or {}) | set(drift.after)):
        old, new = (drift.before or {}).get(key), drift.after.get(key)
        if old != new:
            lines.append(f"      {paint('~', YELLOW)} {key} = {_value(old)} -> {_value(new)}")
    return lines


def _value(value: Any) -> str:
    if value is None:
        return "null"
    return json.dumps(value, ensure_ascii=False)


def plan_json(plan: Plan) -> str:
    return json.dumps(plan.as_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    return "\n".join(lines) + "\n"


def status_text(report: dict[str, Any]) -> str:
    out = [f"Task {report['task']} — state serial {report['serial']}, lineage {report['lineage']}"]
    for name, holder in report["locks"].items():
        out.append(f"{name} lock: {holder['who']} since {holder['created']} ({holder['operation']}, lock ID {holder['id']})" if holder else f"{name} lock: free")
    out.append("")
    rows = [[r["address"], r["id"], _status_words(r.get("status"))] for r in report["resources"]]
    out.append(table(rows, ["RESOURCE", "ID", "STATUS"]) if rows else "No resources in state.\n")
    rows = [[s["name"], json.dumps(s["checkpoint"]) if s["checkpoint"] is not None else "-", s["updated_at"] or "-"] for s in report["streams"]]
    out.append(table(rows, ["STREAM", "CHECKPOINT", "UPDATED"]) if rows else "No streams.\n")
    return "\n".join(out)


def _status_words(status: dict[str, Any] | None) -> str:
    if not status:
        return "unknown"
    return ", ".join(f"{k}={v}" if k != "status" else str(v) for k, v in status.items())
