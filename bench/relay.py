#!/usr/bin/env python3
"""Relay throughput: `dstream run --once` against a plain shell pipe, in the same run.

Both sides move the same N synthetic changes from the `generator` input to the
`files` output (three tables, 64-byte payload, fsync = true):

  pipe     (echo OUTPUT_ENVELOPE; echo INPUT_ENVELOPE | python -m providers.generator) \
             | python -m providers.files                       # PYTHONPATH=<repo>, no dstream
  dstream  python dist/dstream.pyz run --once TASK               # after one untimed init

dstream itself is not in the data path (input stdout -> output stdin is one OS
pipe), so the ratio dstream/pipe shows what dstream's start-up, state, locks,
checkpoint persistence and process supervision cost per run. Runs alternate
(pipe, dstream, dstream, pipe, ...); the median wall time of each side counts.
Every run must deliver exactly N lines to out/*.jsonl or the benchmark fails.

Usage: python bench/relay.py [--count N] [--repeat R] [--json] [--no-fail]
Exit: 0 ok, 1 ratio below target (unless --no-fail), 2 benchmark error.
Standard library only; not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _measure import alternating, rate_ratio, timing_summary
from _pyz import ROOT, BenchError, ensure_pyz, snapshot_pyz

TASK = "relay-bench"
TABLES = ["Persons", "Orders", "Customers"]
PAYLOAD_BYTES = 64
TARGET = 0.95  # dstream msgs/s divided by pipe msgs/s must be at least this


def task_file(count: int) -> str:
    tables = ", ".join(json.dumps(t) for t in TABLES)
    return f"""# written by bench/relay.py
task "{TASK}" {{
  type = "providers"
  input {{
    provider = "generator"
    config {{
      count         = {count}
      tables        = [{tables}]
      payload_bytes = {PAYLOAD_BYTES}
    }}
  }}
  output {{
    provider = "files"
    config {{
      directory = "out"
      fsync     = true
    }}
  }}
}}
"""


def out_paths(directory: Path) -> list[Path]:
    return [directory / "out" / f"{t}_cdc_events.jsonl" for t in TABLES]


def pipe_command(python: str, count: int) -> str:
    input_config = {"count": count, "tables": TABLES, "payload_bytes": PAYLOAD_BYTES}
    output_config = {"directory": "out", "fsync": True}
    resources = [{"type": "file", "name": t, "attributes": {"path": f"out/{t}_cdc_events.jsonl"}} for t in TABLES]
    out_env = json.dumps({"command": "run", "config": output_config, "resources": resources}, separators=(",", ":"))
    in_env = json.dumps({"command": "run", "config": input_config, "once": True}, separators=(",", ":"))
    py = shlex.quote(python)
    # pipefail only so that a failing generator fails the run; the pipeline itself is as described
    return f"set -o pipefail; (echo {shlex.quote(out_env)}; echo {shlex.quote(in_env)} | {py} -m providers.generator) | {py} -m providers.files"


def count_lines(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                total += chunk.count(b"\n")
    return total


def reset(directory: Path, checkpoints: Path | None) -> None:
    """Empty the output files (truncate, so state still finds them) and forget checkpoints."""
    for path in out_paths(directory):
        os.truncate(path, 0)
    if checkpoints is not None:
        try:
            checkpoints.unlink()
        except FileNotFoundError:
            pass


def timed(argv: list[str], cwd: Path, env: dict[str, str], what: str) -> tuple[float, float, str]:
    """Run to completion; returns (wall seconds, CPU seconds of all waited-for descendants, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-10:]
        raise BenchError(f"{what} exited with code {proc.returncode}:\n  " + "\n  ".join(tail))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout.decode("utf-8", "replace")


def summarise(times: list[float], cpus: list[float], count: int) -> dict[str, object]:
    return {**timing_summary(times, count), "cpu_median_s": round(statistics.median(cpus), 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=300_000, help="changes per run (default 300000)")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs of each side (default 5)")
    ap.add_argument("--target", type=float, default=TARGET, help=f"minimum dstream/pipe ratio (default {TARGET})")
    ap.add_argument("--python", default=sys.executable, help="interpreter for both sides (default: this one, not a pyenv shim)")
    ap.add_argument("--pyz", default=str(ROOT / "dist" / "dstream.pyz"), help="the zipapp to measure (default dist/dstream.pyz)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--no-fail", action="store_true", help="exit 0 even when the ratio misses the target")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory and print its path")
    args = ap.parse_args()
    if args.count < 1 or args.repeat < 1:
        ap.error("--count and --repeat must be at least 1")
    try:
        report = bench(args)
    except (BenchError, subprocess.CalledProcessError) as exc:
        print(f"relay benchmark error: {exc}", file=sys.stderr)
        return 2
    ok = report["ratio"] >= args.target
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print_table(report)
    return 0 if ok or args.no_fail else 1


def bench(args: argparse.Namespace) -> dict[str, object]:
    pyz = Path(args.pyz).resolve()
    ensure_pyz(pyz)
    python = args.python
    load_before = os.getloadavg()[0]
    base_env = dict(os.environ)
    # a plain environment: no inherited import path, the default checkpoint interval, normal
    # buffering and bytecode caching (a shell may set PYTHONUNBUFFERED / PYTHONDONTWRITEBYTECODE)
    for name in ("PYTHONPATH", "DSTREAM_CHECKPOINT_INTERVAL", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX"):
        base_env.pop(name, None)
    dstream_env = {**base_env, "SHIV_ROOT": str(pyz.parent / ".shiv")}
    tmp = Path(tempfile.mkdtemp(prefix="dstream-bench-relay-"))
    # bytecode for the pipe side goes to the temp dir, not into the source tree
    pipe_env = {**base_env, "PYTHONPATH": str(ROOT), "PYTHONPYCACHEPREFIX": str(tmp / "pycache")}
    try:
        pyz_copy, build_id = snapshot_pyz(pyz, tmp)
        # dstream side: a task directory, initialised once (creates out/*.jsonl and state)
        dsdir = tmp / "dstream"
        dsdir.mkdir()
        (dsdir / "task.hcl").write_text(task_file(args.count))
        init = subprocess.run([python, str(pyz_copy), "init", "task.hcl"], cwd=dsdir, env=dstream_env, capture_output=True, text=True)
        if init.returncode != 0:
            raise BenchError(f"dstream init exited with code {init.returncode}: {init.stderr.strip()[-2000:]}")
        checkpoints = dsdir / ".dstream" / f"{TASK}.checkpoints.json"
        for path in out_paths(dsdir):
            if not path.is_file():
                raise BenchError(f"dstream init did not create {path}")

        # pipe side: the same files, pre-created, no dstream and no state
        pipedir = tmp / "pipe"
        (pipedir / "out").mkdir(parents=True)
        for path in out_paths(pipedir):
            path.touch()
        pipe_argv = ["bash", "-c", pipe_command(python, args.count)]
        # untimed: compile the pipe side's bytecode once, as init did for dstream's extraction
        warm = tmp / "warm"
        (warm / "out").mkdir(parents=True)
        for path in out_paths(warm):
            path.touch()
        timed(["bash", "-c", pipe_command(python, len(TABLES))], warm, pipe_env, "pipe warm-up")
        dstream_argv = [python, str(pyz_copy), "run", "--once", "task.hcl"]

        results: dict[str, tuple[list[float], list[float]]] = {"pipe": ([], []), "dstream": ([], [])}
        pipe_acks: list[int] = []
        for rep, side in alternating(("pipe", "dstream"), args.repeat):
            directory = pipedir if side == "pipe" else dsdir
            reset(directory, checkpoints if side == "dstream" else None)
            argv, env = (pipe_argv, pipe_env) if side == "pipe" else (dstream_argv, dstream_env)
            wall, cpu, stdout = timed(argv, directory, env, f"{side} run {rep + 1}")
            delivered = count_lines(out_paths(directory))
            if delivered != args.count:
                raise BenchError(f"{side} run {rep + 1} delivered {delivered} lines, expected {args.count}")
            if side == "pipe":
                pipe_acks.append(check_pipe_acks(stdout, args.count, rep))
            else:
                check_checkpoints(checkpoints, args.count, rep)
            results[side][0].append(wall)
            results[side][1].append(cpu)
            if not args.json:
                print(f"  run {rep + 1}/{args.repeat} {side:<7} {wall:7.3f} s", file=sys.stderr)
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    pipe = summarise(*results["pipe"], args.count)
    dstream = summarise(*results["dstream"], args.count)
    pipe["checkpoint_lines_median"] = statistics.median(pipe_acks)
    pipe_median, dstream_median = statistics.median(results["pipe"][0]), statistics.median(results["dstream"][0])
    ratio = rate_ratio(results["dstream"][0], results["pipe"][0])  # dstream msgs/s / pipe msgs/s
    return {
        "benchmark": "relay",
        "count": args.count,
        "repeat": args.repeat,
        "tables": len(TABLES),
        "payload_bytes": PAYLOAD_BYTES,
        "fsync": True,
        "pipe": pipe,
        "dstream": dstream,
        "overhead_s": round(dstream_median - pipe_median, 4),
        "ratio": round(ratio, 4),
        "target": args.target,
        "ok": ratio >= args.target,
        "pyz": {"path": str(pyz), "build_id": build_id},
        "machine": machine(python, load_before),
    }


def last_positions(count: int) -> dict[str, int]:
    """Each stream's final position: change i (1-based) goes to table i mod T as {"seq": i}."""
    return {TABLES[seq % len(TABLES)]: seq for seq in range(max(1, count - len(TABLES) + 1), count + 1)}


def check_pipe_acks(stdout: str, count: int, rep: int) -> int:
    """The output acknowledged every stream's last position; returns its number of checkpoint lines."""
    got: dict[str, object] = {}
    lines = 0
    for text in stdout.splitlines():
        try:
            message = json.loads(text)
        except ValueError:
            raise BenchError(f"pipe run {rep + 1}: the output wrote a non-JSON line on stdout: {text[:80]!r}") from None
        if isinstance(message, dict) and message.get("type") == "checkpoint":
            lines += 1
            position = message.get("position")
            got[str(message.get("stream"))] = position.get("seq") if isinstance(position, dict) else None
    want = last_positions(count)
    if got != want:
        raise BenchError(f"pipe run {rep + 1}: last checkpoints {got} are not the last positions {want}")
    return lines


def check_checkpoints(path: Path, count: int, rep: int) -> None:
    """dstream must have persisted each stream's last position (the generator's seq)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BenchError(f"dstream run {rep + 1}: no readable checkpoints at {path} ({exc})") from None
    streams = doc.get("streams") if isinstance(doc, dict) else None
    streams = streams if isinstance(streams, dict) else {}
    want = last_positions(count)
    got = {}
    for table in want:
        position = (streams.get(table) or {}).get("position")
        got[table] = position.get("seq") if isinstance(position, dict) else None
    if got != want:
        raise BenchError(f"dstream run {rep + 1}: checkpoints {got} are not the last positions {want}")


def machine(python: str, load_before: float) -> dict[str, object]:
    version = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True, text=True).stdout.strip()
    return {"cpus": os.cpu_count(), "python": version, "loadavg_1m_before": round(load_before, 2), "loadavg_1m_after": round(os.getloadavg()[0], 2)}


def print_table(r: dict) -> None:
    p, d = r["pipe"], r["dstream"]
    print(f"relay: {r['count']} changes, {r['tables']} tables, {r['payload_bytes']}-byte payload, fsync on; "
          f"median of {r['repeat']} runs each ({r['machine']['cpus']} CPUs, Python {r['machine']['python']})")
    print(f"{'':<10}{'median s':>10}{'min s':>9}{'max s':>9}{'CPU s':>8}{'msgs/s':>11}{'µs/msg':>9}")
    for name, s in (("pipe", p), ("dstream", d)):
        print(f"{name:<10}{s['median_s']:>10.3f}{s['min_s']:>9.3f}{s['max_s']:>9.3f}{s['cpu_median_s']:>8.2f}"
              f"{s['msgs_per_s']:>11,.0f}{s['us_per_msg']:>9.2f}")
    verdict = "ok" if r["ok"] else "MISSED"
    print(f"ratio dstream/pipe {r['ratio']:.3f} (target >= {r['target']}): {verdict}; dstream overhead {r['overhead_s'] * 1000:+.0f} ms per run")


if __name__ == "__main__":
    sys.exit(main())
