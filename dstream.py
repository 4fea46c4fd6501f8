"""dstream: stream SQL Server CDC changes into Azure Service Bus, managed like Terraform.

The CLI: argument parsing, verbs, output formatting and the one place where
errors become a line of text and an exit code. Domain code lives in state/,
provider processes in providers/. Heavy modules load only in the verbs that
use them, so `dstream version` starts fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__version__ = "0.1.0"

# Exit codes (documented in README.md; tested in tests/cli).
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2  # plan --detailed-exitcode: changes present
EXIT_USAGE = 3  # bad command line or task file
EXIT_LOCKED = 4  # state lock held, or the task is already running
EXIT_PROVIDER = 5  # a provider failed
EXIT_INTERRUPTED = 130

log = logging.getLogger("dstream")

HELP = {
    "validate": "parse and check the task file and provider configs (no network, no state writes)",
    "plan": "show what init would change: desired vs actual vs state",
    "init": "create or update the task's infrastructure (apply the plan)",
    "run": "stream changes from the input to the output",
    "status": "show resources, locks and per-stream checkpoints",
    "destroy": "delete everything this task's state owns",
    "snapshot": "re-snapshot one table on the next run (then stream its changes from its checkpoint)",
    "state": "inspect and move state: list, show, pull, push, unlock",
    "providers": "list the built-in providers",
    "version": "print the version",
    "provider": "run a built-in provider on stdin/stdout (used by dstream itself); 'provider check' checks one against the protocol",
}


@dataclass(frozen=True)
class Context:
    """Settings every verb shares, decided once from the global flags."""

    colour: bool


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would exit 2, which means "changes" here
        from state.errors import UsageError

        raise UsageError(f"{self.prog}: {message}", hint="see dstream --help")


# --- argument parsing ----------------------------------------------------------


def build_parser() -> Parser:
    parser = Parser(prog="dstream", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    parser.add_argument("--log-format", choices=["text", "json"], default="text")
    parser.add_argument("--no-color", action="store_true", help="no colour in output (also: NO_COLOR set)")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser)
    verbs.required = True
    target = Parser(add_help=False)
    target.add_argument("target", metavar="TARGET", help="a task file (task.hcl) or a task name in ./dstream.hcl")
    target.add_argument("-c", "--config", metavar="FILE", help="the task file to look the task name up in")
    target.add_argument("--task", metavar="NAME", help="the task to use when the file holds several")
    locking = Parser(add_help=False)
    locking.add_argument("--lock-timeout", metavar="DURATION", default="0s", type=duration, help="wait this long for a lock (e.g. 30s, 5m)")
    for name, add in VERBS.items():
        add(verbs.add_parser(name, help=HELP[name], description=HELP[name], parents=_parents(name, target, locking)))
    return parser


def _parents(name: str, target: Parser, locking: Parser) -> list[Parser]:
    if name in ("providers", "version", "provider", "state"):
        return []
    if name in ("validate", "status"):
        return [target]
    return [target, locking]


def duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (use e.g. 30s, 5m, 1h)")
    return float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]


def _add_validate(p: Parser) -> None:
    p.set_defaults(run=cmd_validate)


def _add_plan(p: Parser) -> None:
    p.add_argument("--json", action="store_true", help="print the plan as one JSON document")
    p.add_argument("--detailed-exitcode", action="store_true", help="exit 0 for no changes, 2 for changes; errors keep their codes (1, 3, 4, 5)")
    p.add_argument("--out", metavar="FILE", help="save the plan for `dstream init --plan FILE`")
    p.add_argument("--no-refresh", action="store_true", help="plan from state and config alone: no call to any external system")
    p.set_defaults(run=cmd_plan)


def _add_init(p: Parser) -> None:
    p.add_argument("--plan", metavar="FILE", dest="plan_file", help="apply exactly this saved plan")
    p.set_defaults(run=cmd_init)


def _add_run(p: Parser) -> None:
    p.add_argument("--once", action="store_true", help="stop when the input has caught up (for cron)")
    p.set_defaults(run=cmd_run)


def _add_status(p: Parser) -> None:
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_status)


def _add_destroy(p: Parser) -> None:
    p.add_argument("--auto-approve", action="store_true", help="do not ask for confirmation")
    p.set_defaults(run=cmd_destroy)


def _add_snapshot(p: Parser) -> None:
    p.add_argument("--table", required=True, metavar="SCHEMA.TABLE", help="the configured table to snapshot, e.g. dbo.Orders")
    p.set_defaults(run=cmd_snapshot)


def _add_state(p: Parser) -> None:
    sub = p.add_subparsers(dest="state_verb", metavar="SUBCOMMAND", parser_class=Parser)
    sub.required = True
    target = Parser(add_help=False)
    target.add_argument("target", metavar="TARGET")
    target.add_argument("-c", "--config", metavar="FILE")
    target.add_argument("--task", metavar="NAME")
    sub.add_parser("list", parents=[target], help="list the resources in state").set_defaults(run=cmd_state_list)
    show = sub.add_parser("show", parents=[target], help="print the state document, or one resource")
    show.add_argument("address", nargs="?", help='a resource address, e.g. output.file["Persons"]')
    show.set_defaults(run=cmd_state_show)
    sub.add_parser("pull", parents=[target], help="print state and checkpoints as one JSON bundle").set_defaults(run=cmd_state_pull)
    push = sub.add_parser("push", parents=[target], help="replace state (and checkpoints) from a file made by state pull")
    push.add_argument("file", metavar="FILE")
    push.add_argument("--force", action="store_true", help="push even another lineage or an older serial")
    push.add_argument("--lock-timeout", metavar="DURATION", default="0s", type=duration)
    push.set_defaults(run=cmd_state_push)
    unlock = sub.add_parser("unlock", parents=[target], help="release a lock left by a process that is gone")
    unlock.add_argument("lock_id", metavar="LOCK_ID")
    unlock.set_defaults(run=cmd_state_unlock)


def _add_providers(p: Parser) -> None:
    p.set_defaults(run=cmd_providers)


def _add_version(p: Parser) -> None:
    p.set_defaults(run=cmd_version)


def _add_provider(p: Parser) -> None:
    p.add_argument("name", metavar="NAME", help="the built-in provider to run, or 'check' to check one")
    p.add_argument("target", metavar="PATH_OR_NAME", nargs="?", help="check: a built-in's name or an executable's path")
    p.add_argument("--role", choices=["input", "output"], help="check: its role (default: a built-in's own, else told by its validate reply)")
    p.add_argument("--config", metavar="FILE.json", help="check: the config to test with (default: a built-in's minimal one)")
    p.add_argument("--json", action="store_true", help="check: one JSON document instead of one line per rule")
    p.set_defaults(run=cmd_provider)


VERBS: dict[str, Callable[[Parser], None]] = {
    "validate": _add_validate, "plan": _add_plan, "init": _add_init, "run": _add_run, "status": _add_status,
    "destroy": _add_destroy, "snapshot": _add_snapshot, "state": _add_state, "providers": _add_providers, "version": _add_version, "provider": _add_provider,
}


# --- shared plumbing --------------------------------------------------------------


def _builtins() -> dict[str, tuple[str, str, str]]:
    from providers import BUILTINS

    return BUILTINS


def _session(args: argparse.Namespace) -> Any:
    from state.backend import open_backend
    from state.config import find_task_file, load_task
    from state.lifecycle import Session

    path, name = find_task_file(args.target, args.config)
    task = load_task(path, args.task or name, _builtins())
    backend = open_backend(task.backend, task.directory, task.name)
    return Session.open(task, backend, __version__, _builtins(), _provider_log, settings().timeouts)


@dataclass(frozen=True)
class Settings:
    """dstream's tunables from the environment, read here and nowhere else (README: Environment variables)."""

    timeouts: Any
    checkpoint_interval: float


def settings(environ: dict[str, str] | None = None) -> Settings:
    from host.process import Timeouts
    from state.errors import UsageError

    env = os.environ if environ is None else environ

    def seconds(name: str, default: float) -> float:
        text = env.get(name)
        if text is None or text == "":
            return default
        try:
            value = duration(text)
        except argparse.ArgumentTypeError:
            raise UsageError(f"{name}={text!r} is not a duration", hint="use e.g. 30, 30s, 5m") from None
        return value

    timeouts = Timeouts(hello=seconds("DSTREAM_HELLO_TIMEOUT", Timeouts.hello), reply=seconds("DSTREAM_PROVIDER_TIMEOUT", Timeouts.reply),
                        stop_grace=seconds("DSTREAM_STOP_GRACE", Timeouts.stop_grace))
    return Settings(timeouts, seconds("DSTREAM_CHECKPOINT_INTERVAL", 1.0))


def _provider_log(label: str, line: str) -> None:
    logging.getLogger(f"dstream.{label}").info("%s", line)


def _lock(session: Any, name: str, operation: str, timeout: float) -> Any:
    from state.backend import held

    return held(session.backend.locker, name, operation, __version__, timeout)


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


# --- verbs ----------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace, ctx: Context) -> int:
    from state.lifecycle import validate

    session = _session(args)
    streams = validate(session)
    task = session.task
    _out(f"Task {task.name} is valid: input {task.input.name} -> output {task.output.name}"
         + (f" (streams: {', '.join(streams)})" if streams else "") + "\n")
    return EXIT_OK


def cmd_plan(args: argparse.Namespace, ctx: Context) -> int:
    from state.backend import STATE_LOCK
    from state.lifecycle import make_plan, stored_plan
    from state.render import plan_json, plan_text

    session = _session(args)
    with _lock(session, STATE_LOCK, "plan", args.lock_timeout):
        state = session.manager.read()
        plan = make_plan(session, state, refresh=not args.no_refresh)
    if args.out:
        _save_plan(Path(args.out), plan_json(stored_plan(plan, session.shown)))
    shown = session.shown_plan(plan)
    _out(plan_json(shown) if args.json else plan_text(shown, ctx.colour))
    if args.out and not args.json:
        _out(f"\nSaved the plan to {args.out}. Apply it with: dstream init {args.target} --plan {args.out}\n")
    return EXIT_CHANGES if args.detailed_exitcode and plan.has_changes else EXIT_OK


def _save_plan(path: Path, text: str) -> None:
    from state.errors import DstreamError
    from state.safe_files import write_private

    try:
        write_private(path, text)  # 0600, never through a planted symlink
    except OSError as exc:
        raise DstreamError(f"cannot write plan file {path}: {exc.strerror}") from None


def _load_plan(path: Path) -> Any:
    from state.errors import UsageError
    from state.plan import Plan

    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"plan file {path} not found") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"plan file {path} is not readable JSON ({exc})") from None
    return Plan.from_dict(doc, str(path))


def cmd_init(args: argparse.Namespace, ctx: Context) -> int:
    from state.backend import RUN_LOCK, STATE_LOCK
    from state.lifecycle import apply, make_plan
    from state.render import plan_text

    session = _session(args)
    # the run lock too: a replace must never delete what a running output appends to
    with _lock(session, STATE_LOCK, "init", args.lock_timeout), _lock(session, RUN_LOCK, "init", args.lock_timeout):
        state = session.manager.read()
        if args.plan_file:
            plan = _load_plan(Path(args.plan_file))
            plan.check_fresh(session.task.name, state, session.digest())
        else:
            plan = make_plan(session, state, refresh=True)
        _out(plan_text(session.shown_plan(plan), ctx.colour))
        state, counts = apply(session, state, plan)
    _out(f"\nInit complete! Resources: {counts['created']} added, {counts['updated']} changed, {counts['deleted']} destroyed. State serial {state.serial}.\n")
    return EXIT_OK


def cmd_destroy(args: argparse.Namespace, ctx: Context) -> int:
    from state.backend import RUN_LOCK, STATE_LOCK
    from state.errors import DstreamError, UsageError
    from state.lifecycle import destroy, destroy_plan
    from state.render import plan_text

    session = _session(args)
    with _lock(session, STATE_LOCK, "destroy", args.lock_timeout), _lock(session, RUN_LOCK, "destroy", args.lock_timeout):
        state = session.manager.read()
        plan = destroy_plan(session, state)
        _out(plan_text(session.shown_plan(plan), ctx.colour))
        if plan.has_changes and not args.auto_approve:
            if not sys.stdin.isatty():
                raise UsageError("destroy needs confirmation and stdin is not a terminal", hint="pass --auto-approve to destroy without asking")
            _out(f"\nDestroy every resource of task {session.task.name}? Only 'yes' will be accepted: ")
            if sys.stdin.readline().strip() != "yes":
                raise DstreamError("destroy cancelled", hint="nothing was changed")
        state, deleted = destroy(session, state)
    _out(f"\nDestroy complete! Resources: {deleted} destroyed.\n")
    return EXIT_OK


def cmd_snapshot(args: argparse.Namespace, ctx: Context) -> int:
    from state.backend import RUN_LOCK, STATE_LOCK
    from state.lifecycle import request_snapshot

    session = _session(args)
    # both locks, as init: no run acknowledges a position while the request replaces the checkpoint
    with _lock(session, STATE_LOCK, "snapshot", args.lock_timeout), _lock(session, RUN_LOCK, "snapshot", args.lock_timeout):
        stream, _ = request_snapshot(session, session.manager.read(), args.table)
    _out(f"Snapshot of {args.table} requested: stream {stream} is re-snapshotted on the next run, "
         "then its changes stream on from its checkpoint.\n")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, ctx: Context) -> int:
    from state.backend import RUN_LOCK, STATE_LOCK
    from state.lifecycle import status
    from state.render import status_text

    session = _session(args)
    state = session.manager.read()
    locks = {name: session.backend.locker.holder(name) for name in (STATE_LOCK, RUN_LOCK)}
    report = session.shown_document(status(session, state, locks))
    _out(json.dumps(report, indent=2, sort_keys=True) + "\n" if args.json else status_text(report))
    return EXIT_OK


def cmd_run(args: argparse.Namespace, ctx: Context) -> int:
    from state.backend import RUN_LOCK
    from state.lifecycle import run

    session = _session(args)
    started = time.monotonic()
    with _lock(session, RUN_LOCK, "run", args.lock_timeout):
        result, checkpoints = run(session, args.once, interval=settings().checkpoint_interval)
    how = "stopped on request" if result.stopped else "input caught up" if args.once else "input finished"
    log.info("run %s after %.1fs: %d checkpoints acknowledged; streams at %s", how, time.monotonic() - started, result.acked, json.dumps(checkpoints.positions, sort_keys=True))
    return EXIT_OK


def _state_for(args: argparse.Namespace) -> tuple[Any, Any]:
    session = _session(args)
    return session, session.manager.read()


def cmd_state_list(args: argparse.Namespace, ctx: Context) -> int:
    session, state = _state_for(args)
    _out(session.shown("".join(f"{r.address}\n" for r in state.resources)))
    return EXIT_OK


def cmd_state_show(args: argparse.Namespace, ctx: Context) -> int:
    from state.errors import UsageError

    session, state = _state_for(args)
    if not args.address:
        _out(json.dumps(session.shown_document(json.loads(state.to_json())), indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        return EXIT_OK
    for r in state.resources:
        if r.address == args.address:
            shown = session.shown_document({"address": r.address, "provider": r.provider, "id": r.id, "attributes": r.attributes})
            _out(json.dumps(shown, indent=2, sort_keys=True) + "\n")
            return EXIT_OK
    raise UsageError(f"no resource {args.address} in state", hint="see dstream state list")


BUNDLE_FORMAT = "dstream-state-bundle"


def cmd_state_pull(args: argparse.Namespace, ctx: Context) -> int:
    session, state = _state_for(args)
    if not session.manager.exists:
        from state.errors import StateError

        raise StateError(f"task {session.task.name} has no state in {session.backend.description}")
    checkpoints = session.manager.checkpoints()
    bundle = {"format": BUNDLE_FORMAT, "version": 1, "state": json.loads(state.to_json()), "checkpoints": json.loads(checkpoints.to_json())}
    _out(json.dumps(bundle, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return EXIT_OK


def cmd_state_push(args: argparse.Namespace, ctx: Context) -> int:
    from state.backend import RUN_LOCK, STATE_LOCK
    from state.errors import UsageError
    from state.model import Checkpoints, StateFile

    try:
        doc = json.loads(Path(args.file).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {args.file}: {getattr(exc, 'strerror', None) or exc}") from None
    bundle = doc if isinstance(doc, dict) and doc.get("format") == BUNDLE_FORMAT else {"state": doc, "checkpoints": None}
    if not isinstance(bundle.get("state"), dict):
        raise UsageError(f"{args.file} holds no state document", hint="push a file written by dstream state pull")
    state = StateFile.from_json(json.dumps(bundle["state"]).encode(), args.file)
    checkpoints = Checkpoints.from_json(json.dumps(bundle["checkpoints"]).encode(), args.file) if bundle.get("checkpoints") else None
    session = _session(args)
    with _lock(session, STATE_LOCK, "push", args.lock_timeout), _lock(session, RUN_LOCK, "push", args.lock_timeout):
        pushed = session.manager.push(state, args.force)
        if checkpoints is not None:
            session.manager.write_checkpoints(checkpoints)
    _out(f"Pushed state serial {pushed.serial} (lineage {pushed.lineage}) to {session.backend.description}"
         + (f" with checkpoints for {len(checkpoints.positions)} stream(s)" if checkpoints else "") + ".\n")
    return EXIT_OK


def cmd_state_unlock(args: argparse.Namespace, ctx: Context) -> int:
    from state.backend import RUN_LOCK, STATE_LOCK
    from state.errors import StateError

    session = _session(args)
    locker = session.backend.locker
    for name in (STATE_LOCK, RUN_LOCK):
        holder = locker.holder(name)
        if holder is not None and holder.id == args.lock_id:
            locker.force_unlock(name, args.lock_id)
            _out(f"Released the {name} lock {args.lock_id} ({holder.who}).\n")
            return EXIT_OK
    raise StateError(f"no lock with ID {args.lock_id} on task {session.task.name}", hint="dstream status shows the current locks")


def cmd_providers(args: argparse.Namespace, ctx: Context) -> int:
    for name, (_module, role, description) in sorted(_builtins().items()):
        _out(f"{name:<12} {role:<7} {description}\n")
    return EXIT_OK


def cmd_version(args: argparse.Namespace, ctx: Context) -> int:
    import platform

    _out(f"dstream {__version__} (provider protocol 1, Python {sys.version.split()[0]})\n")
    _out(f"interpreter: {platform.python_implementation()} {platform.python_version()} on {sys.platform} {platform.machine()} ({sys.executable})\n")
    _out(f"mssql-cdc: {odbc_usability()}\n")
    return EXIT_OK


def odbc_usability() -> str:
    """Whether mssql-cdc can run here: unixODBC's libodbc.so.2 (pyodbc links it) and the ODBC drivers it knows."""
    try:
        import pyodbc
    except ImportError as exc:
        if "libodbc" in str(exc):
            return "not usable: unixODBC's libodbc.so.2 is missing (install unixodbc on Debian/Ubuntu, unixODBC on RHEL)"
        return f"not usable: {exc}"
    drivers = sorted(pyodbc.drivers())
    if not drivers:
        return "not usable: unixODBC has no ODBC driver (install msodbcsql18, or tdsodbc for FreeTDS)"
    return f"usable; ODBC drivers: {', '.join(drivers)}"


def cmd_provider(args: argparse.Namespace, ctx: Context) -> int:
    import importlib

    from state.errors import UsageError

    if args.name == "check":
        return _check_provider(args)
    builtins = _builtins()
    if args.name not in builtins:
        raise UsageError(f"unknown provider '{args.name}'", hint=f"built-in providers: {', '.join(sorted(builtins))}")
    if args.target or args.role or args.config or args.json:
        raise UsageError("PATH_OR_NAME, --role, --config and --json go with 'provider check' only", hint="dstream provider check NAME")
    return int(importlib.import_module(builtins[args.name][0]).main())


def _check_provider(args: argparse.Namespace) -> int:
    """Run the conformance kit (host/check.py): one line per rule; a failed rule is a provider failure."""
    import tempfile

    from host import check
    from host.process import HostError
    from state.errors import ProviderError, UsageError

    if not args.target:
        raise UsageError("provider check needs PATH_OR_NAME", hint="e.g. dstream provider check files, or ./my-provider --role output")
    config, directory = _check_config(args.config)
    with tempfile.TemporaryDirectory(prefix="dstream-check-") as work:
        try:
            subject = _check_subject(args, config, directory or Path(work), Path(work))
            show = None if args.json else (lambda r: _out(f"{r.outcome}  {r.rule:<16} {r.reason}\n"))
            results = check.check(subject, on_result=show or (lambda r: None))
        except HostError as exc:
            raise ProviderError(f"provider {args.target}: {exc.message}") from None
    if args.json:
        _out(json.dumps({"provider": subject.name, "role": subject.role, "results": [r.__dict__ for r in results]}, indent=2) + "\n")
    failed = [r.rule for r in results if r.outcome == check.FAIL]
    if failed:
        raise ProviderError(f"provider {subject.name} fails {len(failed)} of {len(results)} conformance rules: {', '.join(failed)}")
    return EXIT_OK


def _check_config(path: str | None) -> tuple[dict[str, Any] | None, Path | None]:
    """The --config JSON object and its directory (the provider's working directory), or no config."""
    from state.errors import UsageError

    if path is None:
        return None, None
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"--config {path}: {exc}") from None
    if not isinstance(config, dict):
        raise UsageError(f"--config {path}: must hold a JSON object (the provider's config)")
    return config, Path(path).resolve().parent


def _check_subject(args: argparse.Namespace, config: dict[str, Any] | None, cwd: Path, work: Path) -> Any:
    from host import check
    from host.process import ProviderProcess
    from providers import ENVIRONMENT
    from state.errors import UsageError
    from state.secrets import find_secrets

    builtins = _builtins()
    secret_values = sorted(find_secrets(config)) if config else []
    if args.target in builtins:
        module, role, _ = builtins[args.target]
        if args.role and args.role != role:
            raise UsageError(f"{args.target} is an {role} provider, not an {args.role}")
        process = ProviderProcess.builtin(f"{role}:{args.target}", module, cwd, ENVIRONMENT.get(args.target, ()))
        return check.builtin_subject(args.target, process, role, work, config, secret_values)
    path = Path(args.target).resolve()
    if not path.is_file() or not os.access(path, os.X_OK):
        raise UsageError(f"{args.target} is neither a built-in provider nor an executable file", hint=f"built-in providers: {', '.join(sorted(builtins))}")
    process = ProviderProcess.external(f"{args.role or 'provider'}:{path.name}", path, cwd)
    return check.external_subject(path, process, args.role, config or {}, secret_values)


# --- logging and the one place errors become exit codes -------------------------------


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)), "level": record.levelname.lower(),
               "logger": record.name, "message": record.getMessage()}
        return json.dumps(doc, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name.startswith("dstream."):
            return f"[{record.name[len('dstream.'):]}] {message}"
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.capitalize()}: {message}"
        return message


def _setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("dstream")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    sdk = logging.getLogger("azure")  # the SDKs log request details: only on request
    sdk.handlers[:] = [handler] if level == "debug" else [logging.NullHandler()]
    sdk.setLevel(logging.DEBUG if level == "debug" else logging.CRITICAL)
    sdk.propagate = False


def _exit_code(exc: Exception) -> int:
    from state import errors

    for kind, code in ((errors.UsageError, EXIT_USAGE), (errors.LockedError, EXIT_LOCKED), (errors.ProviderError, EXIT_PROVIDER)):
        if isinstance(exc, kind):
            return code
    return EXIT_ERROR


def _fail(message: str, fmt: str) -> None:
    if fmt == "json":
        sys.stderr.write(json.dumps({"level": "error", "logger": "dstream", "message": message}) + "\n")
    else:
        sys.stderr.write(f"Error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    fmt = "json" if "--log-format=json" in argv or ("--log-format" in argv and "json" in argv) else "text"
    debug = "debug" in argv and any(a.startswith("--log-level") for a in argv)
    from state.errors import UsageError

    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        _fail(str(exc), fmt)
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    _setup_logging(args.log_level, args.log_format)
    colour = not args.no_color and "NO_COLOR" not in os.environ and sys.stdout.isatty()
    try:
        return int(args.run(args, Context(colour)))
    except KeyboardInterrupt:
        _fail("interrupted", args.log_format)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_ERROR
    except Exception as exc:
        from state.errors import DstreamError

        if isinstance(exc, DstreamError):
            _fail(str(exc), args.log_format)
            return _exit_code(exc)
        if debug:
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (run with --log-level debug for the traceback)", args.log_format)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
