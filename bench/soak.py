"""Soak: the fault-injection scenario of tests/faults, for many kills.

    python bench/soak.py [--kills 200] [--duration SECONDS] [--seed N] [--pyz dist/dstream.pyz] [--keep] [--json]

mssql-cdc (TDS peer) → asb-queues (ARM and AMQP peers, duplicate detection on)
through the zipapp, with a writer committing inserts, updates and deletes the
whole time; each run of `dstream run` (one in four with --once) gets one fault
at a random moment (SIGKILL/SIGTERM dstream, SIGKILL/SIGTERM the input,
SIGKILL the output), until --kills faults landed or --duration seconds passed.
Then a final `run --once`, and every queue is read through the real SDK.

Prints the counts: changes written and delivered, lost, duplicates, order
violations, kills by target, resends dropped by duplicate detection, problems
(unexpected exit codes, tracebacks, leaked secrets, hung runs, providers
outliving a killed run). Exit 0: no violation; 1: a violation; 2: the soak
itself failed (peers, writer, init).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _pyz import BenchError, ensure_pyz, snapshot_pyz  # noqa: E402
from faults.scenario import run_scenario  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200, help="faults to inject (default 200)")
    parser.add_argument("--duration", type=float, default=None, help="stop injecting after this many seconds, even short of --kills")
    parser.add_argument("--seed", type=int, default=None, help="replay the faults of an earlier soak (default: a fresh seed)")
    parser.add_argument("--pyz", type=Path, default=ROOT / "dist" / "dstream.pyz")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (peers' files, one log per dstream run)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    return parser.parse_args()


def soak(args: argparse.Namespace, seed: int, tmp: Path) -> int:
    ensure_pyz(args.pyz)
    pyz, _ = snapshot_pyz(args.pyz, tmp)
    progress = None if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    started = time.monotonic()
    report = run_scenario(tmp / "scenario", pyz, seed, args.kills, args.duration, progress=progress)
    elapsed = time.monotonic() - started
    landed = sum(report.kills.values())
    if args.json:
        print(json.dumps({**report.as_dict(), "elapsed_s": round(elapsed, 1), "kills_planned": args.kills}, sort_keys=True))
    else:
        print(report.summary())
        print(f"{landed} of {args.kills} planned kills in {elapsed:.0f}s{'' if report.ok else ': VIOLATIONS'}")
    return 0 if report.ok else 1


def main() -> int:
    args = parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    print(f"soak seed {seed} (--seed {seed} replays the same faults)", file=sys.stderr, flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="dstream-soak-"))
    try:
        return soak(args, seed, tmp)
    except (BenchError, RuntimeError, OSError) as exc:
        print(f"soak failed: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
