"""asb-queues lifecycle: validate, plan, init, destroy, status.

Through Resource Manager or the namespace's own management API (management.connect
picks by the config); the plan does not know which.
Resources are queues: {"type": "queue", "name": <stream>, "id": <ARM id, or the queue's namespace URL>,
"attributes": {queue, properties..., tier}}. A plan reads the namespace once and
lists its queues once (paged), then diffs desired x state x live. init applies
with bounded parallelism and reports each queue the moment it exists.
Names are matched ignoring case (settings.fold): Resource Manager lists
`Orders_cdc_events` as `orders_cdc_events`; state and plans keep the spelling
that was configured.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from providers import helper as h
from providers import protocol as p
from providers.asb_queues import settings
from providers.asb_queues.management import QueueApi, connect
from providers.diff import Diff, Key, SameKey, diff_resources

REPLACE_REASON = "replacing deletes the queue: every message in it is lost"


def in_state(ctx: h.Context) -> dict[Key, dict[str, Any]]:
    return {(r["type"], r["name"]): dict(r.get("attributes") or {}) for r in ctx.envelope.resources if r.get("type") == settings.RESOURCE}


def recorded_tier(known: dict[Key, dict[str, Any]]) -> str:
    tiers = {a.get("tier") for a in known.values() if a.get("tier") in settings.TIERS}
    return str(tiers.pop()) if len(tiers) == 1 else "Standard"


def desired(ctx: h.Context, tier: str) -> dict[Key, dict[str, Any]]:
    names = settings.queue_names(ctx.config, ctx.envelope.streams)
    return {(settings.RESOURCE, stream): settings.attributes(ctx.config, queue, tier) for stream, queue in names.items()}


def resource(mgmt_id: str, key: Key, attrs: dict[str, Any]) -> dict[str, Any]:
    return {"type": key[0], "name": key[1], "id": mgmt_id, "attributes": attrs}


class Planner:
    """One refresh (namespace GET + paged queue list) and the diff."""

    def __init__(self, ctx: h.Context):
        self.ctx = ctx
        self.known = in_state(ctx)
        settings.mode(ctx.config)  # one clear error for a config without any management mode, before any call
        self.mgmt: QueueApi | None = connect(ctx.config) if ctx.envelope.refresh else None
        self.tier = self.mgmt.tier() if self.mgmt else recorded_tier(self.known)
        self.wanted = desired(ctx, self.tier)
        self.live = self.find_live(self.mgmt.queues()) if self.mgmt else None

    def find_live(self, listed: dict[str, dict[str, Any]]) -> dict[Key, dict[str, Any]]:
        """The live queue of each resource, found by folded name, under the spelling in state (else the configured one)."""
        names = {settings.resource_key(k): (k, str(a["queue"])) for k, a in self.wanted.items()}
        names.update({settings.resource_key(k): (k, str(a.get("queue"))) for k, a in self.known.items()})
        found: dict[Key, dict[str, Any]] = {}
        for key, name in names.values():
            queue = listed.get(settings.fold(name))
            if queue is not None:
                found[key] = settings.from_arm(queue, self.tier, name)
        return found

    def wants(self, key: Key) -> bool:
        return settings.resource_key(key) in {settings.resource_key(k) for k in self.wanted}

    def diff(self) -> Diff:
        try:
            diff = diff_resources(self.wanted, self.known, self.live, immutable=settings.IMMUTABLE, equal=settings.equal,
                                  normalise=settings.resource_key)
        except SameKey as exc:
            raise h.CommandFailed(f"the state holds two queues for one stream: {exc} (stream names are case-insensitive)",
                                    hint="remove one with dstream state push after editing a state pull") from None
        if diff.unmanaged and not self.ctx.config["adopt_existing"]:
            names = ", ".join(self.wanted[k]["queue"] for k in diff.unmanaged)
            raise h.CommandFailed(f"queue(s) {names} exist in namespace {settings.namespace_label(self.ctx.config)} but are not managed by this task",
                                    hint="delete or rename them, or set adopt_existing = true to take them over", key="adopt_existing")
        live = self.live or {}
        for key in diff.unmanaged:  # adopted as they are: recorded in state, not modified
            diff.changes.append({"action": "adopt", "resource": {"type": key[0], "name": key[1]}, "before": None, "after": live[key], "replace_paths": []})
        for change in diff.changes:
            if change["action"] == "replace":
                change["reason"] = f"{REPLACE_REASON} ({', '.join(change['replace_paths'])} cannot change in place)"
        return diff

    def close(self) -> None:
        if self.mgmt is not None:
            self.mgmt.close()


def validate(ctx: h.Context) -> None:
    settings.mode(ctx.config)
    settings.queue_names(ctx.config, ctx.envelope.streams)
    for tier in ("Standard",):
        for stream in ctx.envelope.streams:
            settings.attributes(ctx.config, settings.queue_name(ctx.config["queue_name"], stream), tier)


def plan(ctx: h.Context) -> None:
    planner = Planner(ctx)
    try:
        diff = planner.diff()
    finally:
        planner.close()
    for drift in diff.drift:
        ctx.send(p.drift_message(drift))
    for change in diff.changes:
        if change["action"] == "replace":
            ctx.send(p.warning_message(f"queue {change['before']['queue']} (stream {change['resource']['name']}) will be REPLACED: {change['reason']}"))
        ctx.send(p.change_message(change))


def init(ctx: h.Context) -> None:
    planner = Planner(ctx) if ctx.envelope.refresh or ctx.envelope.changes is None else None
    try:
        if planner is not None:
            diff = planner.diff()
            for drift in diff.drift:  # deleted outside dstream and no longer wanted: forget it
                key = (drift["resource"]["type"], drift["resource"]["name"])
                if drift["after"] is None and not planner.wants(key):
                    ctx.send(p.resource_message("deleted", resource(settings.resource_id(ctx.config, drift["before"]["queue"]), key, drift["before"])))
            changes = diff.changes if ctx.envelope.changes is None else list(ctx.envelope.changes)
            mgmt = planner.mgmt or connect(ctx.config)
        else:
            changes, mgmt = list(ctx.envelope.changes or ()), connect(ctx.config)
        Applier(ctx, mgmt).run(changes)
    finally:
        if planner is not None:
            planner.close()


class Applier:
    """Applies changes, at most `parallelism` at a time; deletions first (a replaced or renamed queue frees its name)."""

    def __init__(self, ctx: h.Context, mgmt: QueueApi):
        self.ctx = ctx
        self.mgmt = mgmt
        self.workers = max(1, int(ctx.config["parallelism"]))

    def run(self, changes: list[dict[str, Any]]) -> None:
        first = [c for c in changes if c["action"] == "delete"]
        rest = [c for c in changes if c["action"] != "delete"]
        for group in (first, rest):
            self.apply_all(group)

    def apply_all(self, changes: list[dict[str, Any]]) -> None:
        failure: h.CommandFailed | None = None
        todo = list(changes)
        running: dict[Future[list[tuple[str, dict[str, Any]]]], dict[str, Any]] = {}
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            while todo or running:
                while todo and failure is None and len(running) < self.workers:
                    change = todo.pop(0)
                    running[pool.submit(self.apply, change)] = change
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    running.pop(future)
                    try:
                        results = future.result()
                    except Partial as exc:
                        results, failure = exc.done, failure or exc.failure
                    except Exception as exc:  # anything else: report it, keep what exists recorded
                        results, failure = [], failure or h.CommandFailed(f"unexpected error: {type(exc).__name__}: {exc}")
                    for action, res in results:
                        self.ctx.send(p.resource_message(action, res))
        if failure is not None:
            raise failure

    def apply(self, change: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """One change; returns the resource messages in order. A replace that fails after its delete reports the delete."""
        key = (change["resource"]["type"], change["resource"]["name"])
        action = change["action"]
        before, after = change.get("before"), change.get("after")
        done: list[tuple[str, dict[str, Any]]] = []
        try:
            if action in ("delete", "replace") and before:
                self.mgmt.delete(before["queue"])
                done.append(("deleted", resource(self.mgmt.resource_id(before["queue"]), key, before)))
                self.ctx.log(f"deleted queue {before['queue']}")
            if action in ("create", "replace", "update") and after:
                live = self.mgmt.put(after["queue"], after, create=action != "update")
                attrs = settings.from_arm(live, after.get("tier", "Standard"), after["queue"]) if live.get("properties") else after
                done.append(("created" if action != "update" else "updated", resource(live.get("id") or self.mgmt.resource_id(after["queue"]), key, attrs)))
                self.ctx.log(f"{action}d queue {after['queue']}")
            if action == "adopt" and after:
                done.append(("created", resource(self.mgmt.resource_id(after["queue"]), key, after)))
                self.ctx.log(f"adopted queue {after['queue']}")
        except h.CommandFailed as exc:  # what happened before the failure still goes to state
            raise Partial(done, h.CommandFailed(f"stream {key[1]}: {exc.message}", hint=exc.hint, key=exc.key)) from None
        return done


class Partial(Exception):
    def __init__(self, done: list[tuple[str, dict[str, Any]]], failure: h.CommandFailed):
        super().__init__(failure.message)
        self.done, self.failure = done, failure


def destroy(ctx: h.Context) -> None:
    known = in_state(ctx)
    if not known:
        return
    changes = [{"action": "delete", "resource": {"type": k[0], "name": k[1]}, "before": a, "after": None} for k, a in sorted(known.items())]
    mgmt = connect(ctx.config)
    try:
        Applier(ctx, mgmt).run(changes)
    finally:
        mgmt.close()


def status(ctx: h.Context) -> None:
    known = in_state(ctx)
    if not known:
        return
    mgmt = connect(ctx.config)
    try:
        live = mgmt.counts()
    finally:
        mgmt.close()
    for key, attrs in sorted(known.items()):
        res = resource(settings.resource_id(ctx.config, attrs.get("queue", "")), key, attrs)
        ctx.send(p.status_message(res, live.get(settings.fold(str(attrs.get("queue")))) or {"status": "missing"}))
