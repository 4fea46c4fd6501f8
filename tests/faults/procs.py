"""The process tree of a dstream run, read from /proc (psutil is not installed)."""

from __future__ import annotations

import os
from pathlib import Path


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def provider_pid(dstream_pid: int, role: str) -> int | None:
    """The live provider process of `role` (input: mssql_cdc, output: asb_queues) under dstream."""
    module = {"input": "providers.mssql_cdc", "output": "providers.asb_queues"}[role]
    for pid in children(dstream_pid):
        if module in cmdline(pid):
            return pid
    return None


def exited(pid: int) -> bool:
    """Gone or a zombie: it has finished, whatever a signal sent now would say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def alive(pid: int, module_hint: str) -> bool:
    """Still running (and not a zombie, and not a reused pid)."""
    return not exited(pid) and module_hint in cmdline(pid)
