#!/usr/bin/env python3
"""Start-up: wall time of short dstream commands against the interpreter's own floor.

Three commands, interleaved (the order rotates every round), 2 warm-up rounds
then R timed rounds; the median of each counts:

  floor     python -c pass                                   (the interpreter alone)
  version   python dist/dstream.pyz version                  target <= 0.3 s
  validate  python dist/dstream.pyz validate local.hcl       target <= 0.6 s
            (run in a temp copy of examples/; starts both providers)
  validate_nocache  the same with the parse cache off (DSTREAM_CACHE_DIR=""); the report's
            cache_ratio = validate / validate_nocache says what the cache saves

SHIV_ROOT points under dist/, so the zipapp's extraction is warm after the
first run and what is measured is a user's second and later invocation.

  first     python dist/dstream.pyz version  with a new, empty SHIV_ROOT each round
            (unpacking, and compiling what it imports for this interpreter)   target <= 3 s

--chroot ROOT runs every command in a root filesystem (.ci/rootfs/trixie: its python3, with
a user's plain environment), for interpreters this machine lacks.

Usage: python bench/startup.py [--repeat R] [--python PY] [--chroot ROOT] [--json] [--no-fail]
Exit: 0 ok, 1 a target missed (unless --no-fail), 2 benchmark error.
Standard library only; not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _pyz import ROOT, BenchError, ensure_pyz, snapshot_pyz

TARGETS = {"version": 0.3, "validate": 0.6, "first": 3.0}  # seconds, median wall time
WARMUP = 2


def timed(argv: list[str], cwd: Path, env: dict[str, str], name: str, expect: str, chroot: Path | None = None) -> float:
    if chroot is not None:  # the same command inside the root filesystem, with a user's plain environment
        inner = {"PATH": "/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
        inner.update({k: inside(v, chroot) for k, v in env.items() if k in ("SHIV_ROOT", "DSTREAM_CACHE_DIR")})
        argv = ["chroot", str(chroot), "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in inner.items()), "/bin/sh", "-c",
                'cd "$1" && shift && exec "$@"', "sh", inside(str(cwd), chroot), *(inside(a, chroot) for a in argv)]
        cwd = Path("/")
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or expect not in proc.stdout:
        raise BenchError(f"{name} exited with code {proc.returncode} (expected {expect!r} on stdout):\n"
                         f"  stdout: {proc.stdout.strip()[-500:]}\n  stderr: {proc.stderr.strip()[-1000:]}")
    return wall


def inside(path: str, chroot: Path) -> str:
    """A host path under the root filesystem as its interpreter sees it (other arguments unchanged)."""
    return "/" + str(Path(path).relative_to(chroot)) if path.startswith(str(chroot) + "/") else path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15, help="timed rounds (default 15)")
    ap.add_argument("--python", default=sys.executable, help="interpreter (default: this one, not a pyenv shim)")
    ap.add_argument("--chroot", help="run in this root filesystem (its python3 unless --python names another)")
    ap.add_argument("--pyz", default=str(ROOT / "dist" / "dstream.pyz"), help="the zipapp to measure (default dist/dstream.pyz)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--no-fail", action="store_true", help="exit 0 even when a target is missed")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    try:
        report = bench(args)
    except (BenchError, subprocess.CalledProcessError) as exc:
        print(f"startup benchmark error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print_table(report)
    return 0 if report["ok"] or args.no_fail else 1


def bench(args: argparse.Namespace) -> dict[str, object]:
    pyz = Path(args.pyz).resolve()
    ensure_pyz(pyz)
    chroot = Path(args.chroot).resolve() if args.chroot else None
    python = "python3" if chroot and args.python == sys.executable else args.python
    load_before = os.getloadavg()[0]
    env = dict(os.environ)
    # a plain environment: no inherited import path or task settings, normal buffering and
    # bytecode caching (a shell may set PYTHONUNBUFFERED / PYTHONDONTWRITEBYTECODE)
    for name in ("PYTHONPATH", "DSTREAM_OUT", "NO_COLOR", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX"):
        env.pop(name, None)
    tmp = Path(tempfile.mkdtemp(prefix="dstream-bench-startup-", dir=str(chroot / "tmp") if chroot else None))
    env["SHIV_ROOT"] = str(tmp / "shiv") if chroot else str(pyz.parent / ".shiv")
    try:
        pyz_copy, build_id = snapshot_pyz(pyz, tmp)
        examples = tmp / "examples"
        shutil.copytree(ROOT / "examples", examples, ignore=shutil.ignore_patterns(".dstream", "out", "bench-out", "__pycache__"))
        cached = {**env, "DSTREAM_CACHE_DIR": str(tmp / "cache")}
        commands = {
            "floor": ([python, "-c", "pass"], "", env),
            "version": ([python, str(pyz_copy), "version"], "dstream ", env),
            "validate": ([python, str(pyz_copy), "validate", "local.hcl"], "is valid", cached),
            "validate_nocache": ([python, str(pyz_copy), "validate", "local.hcl"], "is valid", {**env, "DSTREAM_CACHE_DIR": ""}),
            "first": ([python, str(pyz_copy), "version"], "dstream ", env),  # SHIV_ROOT replaced each round
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        names = list(commands)
        for rnd in range(WARMUP + args.repeat):
            shift = rnd % len(names)
            for name in names[shift:] + names[:shift]:
                argv, expect, command_env = commands[name]
                if name == "first":
                    command_env = {**command_env, "SHIV_ROOT": str(tmp / f"first-{rnd}")}
                wall = timed(argv, examples, command_env, name, expect, chroot)
                if rnd >= WARMUP:
                    times[name].append(wall)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    floor = statistics.median(times["floor"])
    results: dict[str, dict[str, object]] = {}
    ok = True
    for name, samples in times.items():
        median = statistics.median(samples)
        entry: dict[str, object] = {
            "median_s": round(median, 4),
            "min_s": round(min(samples), 4),
            "max_s": round(max(samples), 4),
            "times_s": [round(t, 4) for t in samples],
            "vs_floor": round(median / floor, 2),
            "over_floor_s": round(median - floor, 4),
        }
        if name in TARGETS:
            entry["target_s"] = TARGETS[name]
            entry["ok"] = median <= TARGETS[name]
            ok = ok and bool(entry["ok"])
        results[name] = entry
    ask = [python, "-c", "import sys; print(sys.version.split()[0])"]
    version = subprocess.run(["chroot", str(chroot), *ask] if chroot else ask, capture_output=True, text=True).stdout.strip()
    return {
        "benchmark": "startup",
        "repeat": args.repeat,
        "warmup": WARMUP,
        "commands": results,
        "ok": ok,
        "cache_ratio": round(statistics.median(times["validate"]) / statistics.median(times["validate_nocache"]), 3),
        "pyz": {"path": str(pyz), "build_id": build_id},
        "machine": {"cpus": os.cpu_count(), "python": version, "loadavg_1m_before": round(load_before, 2),
                    "loadavg_1m_after": round(os.getloadavg()[0], 2)},
    }


def print_table(r: dict) -> None:
    m = r["machine"]
    print(f"startup: median of {r['repeat']} runs after {r['warmup']} warm-up rounds ({m['cpus']} CPUs, Python {m['python']})")
    print(f"{'':<17}{'median s':>10}{'min s':>9}{'max s':>9}{'x floor':>9}{'target':>9}  verdict")
    for name, c in r["commands"].items():
        target = f"<= {c['target_s']}" if "target_s" in c else ""
        verdict = "" if "ok" not in c else "ok" if c["ok"] else "MISSED"
        print(f"{name:<17}{c['median_s']:>10.3f}{c['min_s']:>9.3f}{c['max_s']:>9.3f}{c['vs_floor']:>9.2f}{target:>9}  {verdict}")
    print(f"parse cache: validate takes {r['cache_ratio']:.2f}x the time of validate without it")


if __name__ == "__main__":
    sys.exit(main())
