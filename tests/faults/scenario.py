"""The fault scenario, shared by tests/faults and bench/soak.py.

mssql-cdc (our TDS peer) → asb-queues (our ARM and AMQP peers, duplicate
detection on), run through the built zipapp. While a writer commits changes
(writer.py), runs of `dstream run` (sometimes --once) are started one after
another and each gets one fault at a random moment: SIGKILL or SIGTERM to
dstream, SIGKILL or SIGTERM to the input provider, SIGKILL to the output
provider. The ODBC driver alternates run by run. At the end every queue is read
through the real SDK and checked against the writer's journal (checks.py).
A seed fixes the faults (targets, signals, delays, --once); the writer's
timing is not reproducible, so a seed replays the same faults, not the same race.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyodbc
from mssql.conftest import Peer, start_peer, tls_env
from servicebus_peers import AzurePeers

from .checks import Report, check_delivery, check_output, tail
from .procs import alive, children, exited, provider_pid
from .writer import SCHEMA, TABLES, Writer, available_drivers, connection_string

QUEUE = "{table}_cdc_events"
EXIT_TIMEOUT = 60.0  # a run that has not exited this long after its kill is hung
LOCK_WAIT = "60s"  # a restart waits for the killed run's providers, which hold the run lock until they exit
ORPHAN_TIMEOUT = 30.0  # providers of a killed dstream get SIGTERM (parent-death signal) and must be gone by then

TASK = """task "faults" {
  input {
    provider = "mssql-cdc"
    config {
      connection_string = "{{ env "MSSQL_CONNECTION" }}"
      tables            = ["Persons", "Orders"]
      poll_interval_min = 0.05
      poll_interval_max = 0.2
      page_size         = 40
    }
  }
  output {
    provider = "asb-queues"
    config {
      subscription_id     = "{{ env "AZ_SUB" }}"
      resource_group      = "{{ env "AZ_RG" }}"
      namespace           = "{{ env "AZ_NS" }}"
      management_endpoint = "{{ env "AZ_ARM" }}"
      connection_string   = "{{ env "ASB_CONNECTION" }}"
      queue {
        requires_duplicate_detection = true
      }
    }
  }
}
"""

# --- kills -------------------------------------------------------------------------------

TARGETS = (("dstream", signal.SIGKILL), ("dstream", signal.SIGTERM), ("input", signal.SIGKILL), ("input", signal.SIGTERM), ("output", signal.SIGKILL))


@dataclass(frozen=True)
class Strike:
    """One planned fault: after `delay` seconds of `run` (with --once or not), send `sig` to `target`."""

    target: str
    sig: int
    delay: float
    once: bool
    driver: str

    def describe(self) -> str:
        return f"{'run --once' if self.once else 'run'} [{self.driver}] {signal.Signals(self.sig).name} {self.target} at {self.delay:.2f}s"


def plan_strikes(rng: random.Random, drivers: list[str]) -> Iterator[Strike]:
    """An endless, seeded sequence of strikes: every target in each round of five, in a shuffled
    order; random delays; one run in four with --once; drivers alternate run by run."""
    n = 0
    while True:
        for target, sig in rng.sample(TARGETS, len(TARGETS)):
            yield Strike(target, sig, round(rng.uniform(0.2, 3.0), 2), rng.random() < 0.25, drivers[n % len(drivers)])
            n += 1


def expected_codes(strike: Strike) -> set[int]:
    """The exit codes README promises for this fault (SIGTERM before dstream installs its handler: -15)."""
    if strike.target == "dstream":
        return {-signal.SIGKILL} if strike.sig == signal.SIGKILL else {0, -signal.SIGTERM}
    if strike.sig == signal.SIGTERM:  # a clean stop (protocol §6), or a provider failure if it came before the handler
        return {0, 5}
    return {5}


# --- the scenario ------------------------------------------------------------------------


class Scenario:
    """Peers, task, writer and dstream runs in `directory`. Use as a context manager."""

    def __init__(self, directory: Path, pyz: Path, seed: int, writer_pause: tuple[float, float] = (0.01, 0.05)):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pyz, self.seed = pyz, seed
        self.rng = random.Random(seed)
        self.drivers = available_drivers()
        if not self.drivers:
            raise RuntimeError("no SQL Server ODBC driver installed: need FreeTDS (tdsodbc) or mssql-python-odbc")
        self.report = Report(seed)
        self.writer_pause = writer_pause
        self.peers: AzurePeers | None = None
        self.tds: Peer | None = None
        self.writer: Writer | None = None
        self._orphans: list[tuple[int, str]] = []  # providers of runs that were killed, to check they end

    def __enter__(self) -> Scenario:
        try:
            self.peers = AzurePeers(self.dir / "peers").start()
            self.tds = start_peer(self.drivers[0])
            self._setup_database()
            (self.dir / "task.hcl").write_text(TASK)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.writer is not None and self.writer.is_alive():
            self.writer.stop()
        for pid, hint in self._orphans:
            if alive(pid, hint):
                signal_quietly(pid, signal.SIGKILL)
        if self.tds is not None:
            self.tds.stop()
        if self.peers is not None:
            self.peers.stop()

    def _setup_database(self) -> None:
        assert self.tds is not None
        conn = pyodbc.connect(connection_string(self.drivers[0], self.tds.port), autocommit=True, timeout=10)
        try:
            for statement in SCHEMA:
                conn.execute(statement)
        finally:
            conn.close()

    # --- dstream -----------------------------------------------------------------------

    def env(self, driver: str) -> dict[str, str]:
        assert self.peers is not None and self.tds is not None
        config = self.peers.config()
        return {**os.environ, **self.peers.env(), **tls_env(), "SHIV_ROOT": str(self.pyz.parent / ".shiv"),
                "MSSQL_CONNECTION": connection_string(driver, self.tds.port), "AZ_SUB": config["subscription_id"],
                "AZ_RG": config["resource_group"], "AZ_NS": config["namespace"], "AZ_ARM": config["management_endpoint"],
                "ASB_CONNECTION": config["connection_string"]}

    def start(self, *args: str, driver: str | None = None) -> tuple[subprocess.Popen[bytes], Path]:
        """Start `dstream ARGS task.hcl`; its stdout and stderr go to one numbered log file."""
        self.report.runs += 1
        log = self.dir / "logs" / f"{self.report.runs:04d}-{args[0]}.log"
        log.parent.mkdir(exist_ok=True)
        with open(log, "wb") as sink:
            proc = subprocess.Popen([sys.executable, str(self.pyz), *args, "task.hcl"], cwd=self.dir, env=self.env(driver or self.drivers[0]),
                                    stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT)
        return proc, log

    def dstream(self, *args: str, driver: str | None = None, timeout: float = 120) -> tuple[int, str]:
        proc, log = self.start(*args, driver=driver)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = -999
        return code, log.read_text(errors="replace")

    def init(self) -> None:
        code, text = self.dstream("init")
        if code != 0:
            raise RuntimeError(f"dstream init failed ({code}):\n{text}")

    def start_writer(self) -> None:
        assert self.tds is not None
        self.writer = Writer(connection_string(self.drivers[0], self.tds.port), random.Random(self.seed + 1), self.writer_pause)
        self.writer.start()

    # --- faults ------------------------------------------------------------------------

    def strike(self, strike: Strike) -> bool:
        """One run with one fault; True when the signal reached a live process."""
        proc, log = self.start("run", *(["--once"] if strike.once else []), "--lock-timeout", LOCK_WAIT, driver=strike.driver)
        hit = self._hit(proc, strike)
        try:
            code = proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.problem(strike, f"still running {EXIT_TIMEOUT:.0f}s after the fault", log)
            self._kill_tree(proc)
            return hit
        if hit:
            self.report.kills[f"{strike.target} {signal.Signals(strike.sig).name}"] += 1
        self._judge(strike, hit, code, log)
        return hit

    def _hit(self, proc: subprocess.Popen[bytes], strike: Strike) -> bool:
        """Wait `delay` (and until the target exists), then signal it. False if the run ended first."""
        deadline = time.monotonic() + strike.delay
        while proc.poll() is None:
            pid = proc.pid if strike.target == "dstream" else provider_pid(proc.pid, strike.target)
            if pid is not None and time.monotonic() >= deadline:
                self._note_providers(proc.pid)
                if exited(pid):  # finished between poll() and now: a signal to a zombie hits nothing
                    return False
                os.kill(pid, strike.sig)
                return True
            time.sleep(0.02)
        return False

    def _note_providers(self, dstream_pid: int) -> None:
        for role, hint in (("input", "providers.mssql_cdc"), ("output", "providers.asb_queues")):
            pid = provider_pid(dstream_pid, role)
            if pid is not None:
                self._orphans.append((pid, hint))

    def _kill_tree(self, proc: subprocess.Popen[bytes]) -> None:
        for pid in children(proc.pid):
            signal_quietly(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()

    def _judge(self, strike: Strike, hit: bool, code: int, log: Path) -> None:
        text = log.read_text(errors="replace")
        allowed = expected_codes(strike) if hit else {0}
        if code not in allowed:
            self.problem(strike, f"exit {code}, expected {sorted(allowed)}{'' if hit else ' (ended before the fault)'}", log)
        check_output(text, code, lambda why: self.problem(strike, why, log))

    def problem(self, strike: Strike | None, why: str, log: Path | None = None) -> None:
        where = f" ({log.name}: {tail(log)})" if log is not None else ""
        self.report.problems.append(f"{strike.describe() if strike else 'final'}: {why}{where}")

    # --- the end -----------------------------------------------------------------------

    def finish(self) -> Report:
        """Stop the writer, wait for killed runs' providers, run --once, then check what the consumer gets."""
        assert self.writer is not None and self.peers is not None
        self.writer.stop()
        if self.writer.error is not None:
            raise RuntimeError(f"the writer failed, so the scenario proves nothing: {self.writer.error!r}")
        self._wait_for_orphans()
        code, text = self.dstream("run", "--once")
        if code != 0:
            self.report.problems.append(f"final run --once: exit {code}: {text.strip().splitlines()[-1:] or ''}")
        check_output(text, code, lambda why: self.report.problems.append(f"final run --once: {why}"))
        self._check_queues_deduplicate()
        for table in TABLES:
            self._check_table(table)
        return self.report

    def _wait_for_orphans(self) -> None:
        deadline = time.monotonic() + ORPHAN_TIMEOUT
        while any(alive(pid, hint) for pid, hint in self._orphans) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [pid for pid, hint in self._orphans if alive(pid, hint)]
        if left:
            self.report.problems.append(f"providers of killed runs still alive after {ORPHAN_TIMEOUT:.0f}s: {left}")

    def _check_queues_deduplicate(self) -> None:
        assert self.peers is not None
        for table in TABLES:
            props = self.peers.queues().get(QUEUE.format(table=table), {})
            if not props.get("requiresDuplicateDetection"):
                self.report.problems.append(f"queue {QUEUE.format(table=table)} has no duplicate detection: {props}")

    def _check_table(self, table: str) -> None:
        assert self.writer is not None and self.peers is not None
        expected = [c for c in self.writer.journal if c.table == table]
        messages = self.peers.receive(QUEUE.format(table=table), len(expected), timeout=60)
        check_delivery(self.report, table, expected, [(str(m.message_id), json.loads(b"".join(m.body))) for m in messages])
        stats = self.peers.amqp_stats().get("queues", {}).get(QUEUE.format(table=table), {})
        self.report.deduplicated += int(stats.get("duplicates", 0))


def signal_quietly(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def run_scenario(directory: Path, pyz: Path, seed: int, kills: int, duration: float | None = None, progress: Callable[[str], None] | None = None) -> Report:
    """The whole scenario: init, writer, `kills` faults (or until `duration` seconds), then the checks."""
    with Scenario(directory, pyz, seed) as scenario:
        scenario.init()
        scenario.start_writer()
        started = time.monotonic()
        strikes = plan_strikes(scenario.rng, scenario.drivers)
        while sum(scenario.report.kills.values()) < kills:
            if duration is not None and time.monotonic() - started >= duration:
                break
            strike = next(strikes)
            hit = scenario.strike(strike)
            if progress is not None:
                progress(f"{sum(scenario.report.kills.values()):4d} {strike.describe()}{'' if hit else ' (ended first)'}")
        return scenario.finish()
