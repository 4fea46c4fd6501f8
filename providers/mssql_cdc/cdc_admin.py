"""validate / plan / init / status / destroy for mssql-cdc.

Resources (only with manage_cdc = true) record what dstream enabled:
{"type": "cdc-database", "name": <db>} and {"type": "cdc-table", "name": "schema.table",
"attributes": {"schema", "table", "capture_instance"}}. destroy disables exactly those.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from providers import helper as h
from providers import protocol as p
from providers.mssql_cdc import catalog as cat
from providers.mssql_cdc import snapshot as snap
from providers.mssql_cdc.config import is_pattern, matches, settings, stream_name
from providers.mssql_cdc.db import Database
from providers.mssql_cdc.position import to_json
from providers.mssql_cdc.reader import ident, start_key

DB_RESOURCE, TABLE_RESOURCE = "cdc-database", "cdc-table"


def config_streams(ctx: h.Context) -> list[dict[str, Any]]:
    """Streams without asking the database: configured names, and wildcards matched against state's streams."""
    s = settings(ctx.config)
    out: dict[str, dict[str, Any]] = {}
    for schema, table in s.patterns:
        if is_pattern(schema, table):
            for known in ctx.envelope.streams:
                if matches((schema, table), str(known.get("schema", "dbo")), str(known.get("table", ""))):
                    out[known["name"]] = dict(known)
        else:
            out[stream_name(schema, table)] = {"name": stream_name(schema, table), "table": table, "schema": schema}
    return list(out.values())


def validate(ctx: h.Context) -> None:
    ctx.send(p.streams_message(config_streams(ctx)))


def connect(ctx: h.Context) -> tuple[Database, cat.Catalog, list[cat.Table]]:
    s = settings(ctx.config)
    db = Database(s, ctx.log)
    catalog = cat.load(db)
    return db, catalog, catalog.resolve(s, allow_untracked=s.manage_cdc)


def owned(ctx: h.Context, kind: str) -> list[dict[str, Any]]:
    return [r for r in ctx.envelope.resources if r.get("type") == kind]


def desired_changes(ctx: h.Context, catalog: cat.Catalog, tables: list[cat.Table]) -> list[dict[str, Any]]:
    if not settings(ctx.config).manage_cdc:
        return []
    changes: list[dict[str, Any]] = []
    if not catalog.cdc_enabled:
        changes.append({"action": "create", "resource": {"type": DB_RESOURCE, "name": catalog.database}, "before": None,
                        "after": {"database": catalog.database}, "replace_paths": []})
    wanted = set()
    for t in tables:
        name = f"{t.schema}.{t.name}"
        wanted.add(name)
        if not t.instances:
            changes.append({"action": "create", "resource": {"type": TABLE_RESOURCE, "name": name}, "before": None,
                            "after": {"schema": t.schema, "table": t.name, "capture_instance": f"{t.schema}_{t.name}"}, "replace_paths": []})
    for r in owned(ctx, TABLE_RESOURCE):
        if r["name"] not in wanted:
            changes.append({"action": "delete", "resource": {"type": TABLE_RESOURCE, "name": r["name"]}, "before": r.get("attributes"),
                            "after": None, "replace_paths": []})
    return changes


def plan(ctx: h.Context) -> None:
    if not ctx.envelope.refresh:
        ctx.send(p.streams_message(config_streams(ctx)))
        return
    db, catalog, tables = connect(ctx)
    changes = desired_changes(ctx, catalog, tables)
    ctx.send(p.streams_message([t.describe() for t in tables]))
    for change in changes:
        ctx.send(p.change_message(change))
    plan_snapshots(ctx, db, tables)
    db.close()


def plan_snapshots(ctx: h.Context, db: Database, tables: list[cat.Table]) -> None:
    """Tables new to this task are snapshotted on their first run (snapshot = initial | when_needed): say which, and how big."""
    s = settings(ctx.config)
    if s.snapshot == "none":
        return
    known = {str(st.get("name", "")).lower() for st in ctx.envelope.streams}
    for t in tables:
        if t.stream.lower() in known or not t.object_id:
            continue
        snap.key_columns(db, t)  # a table that cannot be snapshotted fails the plan, not the run
        rows = snap.approx_rows(db, t)
        chunks = -(-rows // s.snapshot_chunk_size) if rows else 0
        ctx.send(p.warning_message(f"snapshot: {t.schema}.{t.name} will be snapshotted on the first run (snapshot = \"{s.snapshot}\"): "
                                   f"~{rows if rows is not None else '?'} rows (sys.partitions), {chunks} chunks of {s.snapshot_chunk_size}"))


def init(ctx: h.Context) -> None:
    db, catalog, tables = connect(ctx)
    changes = desired_changes(ctx, catalog, tables) if ctx.envelope.changes is None else list(ctx.envelope.changes)
    for change in sorted(changes, key=lambda c: (c["resource"]["type"] != DB_RESOURCE, c["resource"]["name"])):
        apply(ctx, db, change)
    if changes:
        catalog = cat.load(db)
        tables = catalog.resolve(settings(ctx.config), allow_untracked=False)
    ctx.send(p.streams_message([t.describe() for t in tables]))
    if settings(ctx.config).start == "latest":  # changes between init and the first run must not be lost
        max_lsn = db.query(cat.SQL_MAX_LSN)[0][0]
        for t in tables:
            inst = t.instances[-1]
            start = to_json(start_key(inst, max_lsn), ident(inst))
            if settings(ctx.config).snapshot != "none":  # stored only for a stream without a checkpoint: its first run snapshots it
                start["snapshot"] = snap.requested("initial")
            ctx.send(p.checkpoint_message(t.stream, start))
    db.close()


def snapshot(ctx: h.Context) -> None:
    """`dstream snapshot --table T`: T's current position plus a snapshot request, so the next run
    snapshots T at that position and then streams T's changes after it (nothing skipped)."""
    db, _, tables = connect(ctx)
    table = pick(tables, ctx.envelope.target)
    snap.key_columns(db, table)  # a table that cannot be snapshotted fails now, not in the run
    current = ctx.envelope.checkpoints.get(table.stream)
    if isinstance(current, dict):
        position = {k: v for k, v in current.items() if k != "snapshot"}
    else:  # never streamed: where start = "latest" starts; the snapshot covers every row before it
        inst = table.instances[-1]
        position = to_json(start_key(inst, db.query(cat.SQL_MAX_LSN)[0][0]), ident(inst))
    position["snapshot"] = snap.requested("on_demand")
    ctx.send(p.checkpoint_message(table.stream, position))
    ctx.log(f"{table.schema}.{table.name}: snapshot requested for the next run, at LSN {position['lsn']}")
    db.close()


def pick(tables: list[cat.Table], wanted: str) -> cat.Table:
    """The configured table named schema.table (case-insensitive, as SQL Server compares names), or a bare name that is unique."""
    schema, _, name = wanted.rpartition(".")
    found = [t for t in tables if t.name.lower() == name.lower() and (not schema or t.schema.lower() == schema.lower().strip("[]"))]
    if len(found) == 1:
        return found[0]
    configured = ", ".join(sorted(f"{t.schema}.{t.name}" for t in tables)) or "none"
    if found:
        raise h.CommandFailed(f"table {wanted!r} is ambiguous: name its schema ({', '.join(f'{t.schema}.{t.name}' for t in found)})")
    raise h.CommandFailed(f"table {wanted!r} is not one this task streams; configured tables: {configured}",
                          hint="pass --table with one of them, or add the table to the config and run dstream init", key="tables")


def apply(ctx: h.Context, db: Database, change: dict[str, Any]) -> None:
    kind, name, action = change["resource"]["type"], change["resource"]["name"], change["action"]
    if kind == DB_RESOURCE and action == "create":
        db.execute("EXEC sys.sp_cdc_enable_db")
        ctx.send(p.resource_message("created", {"type": kind, "name": name, "id": name, "attributes": change.get("after") or {}}))
        ctx.log(f"enabled change data capture on database {name}")
    elif kind == TABLE_RESOURCE and action == "create":
        attrs = change["after"]
        db.execute(f"EXEC sys.sp_cdc_enable_table @source_schema = {cat.literal(attrs['schema'])}, @source_name = {cat.literal(attrs['table'])}, "
                   "@role_name = NULL, @supports_net_changes = 0")
        found = [i for i in cat.instance_states(db).values() if i.name.lower() == attrs["capture_instance"].lower()]
        attrs = {**attrs, "capture_instance": found[0].name if found else attrs["capture_instance"]}
        ctx.send(p.resource_message("created", {"type": kind, "name": name, "id": attrs["capture_instance"], "attributes": attrs}))
        ctx.log(f"enabled change data capture on {name} (capture instance {attrs['capture_instance']})")
    elif action == "delete":
        disable(ctx, db, {"type": kind, "name": name, "attributes": change.get("before") or {}})


def disable(ctx: h.Context, db: Database, resource: dict[str, Any]) -> None:
    attrs = resource.get("attributes") or {}
    if resource["type"] == TABLE_RESOURCE:
        ci = attrs.get("capture_instance", "")
        if ci.lower() in cat.instance_states(db):
            db.execute(f"EXEC sys.sp_cdc_disable_table @source_schema = {cat.literal(attrs['schema'])}, "
                       f"@source_name = {cat.literal(attrs['table'])}, @capture_instance = {cat.literal(ci)}")
            ctx.log(f"disabled change data capture on {resource['name']} (capture instance {ci})")
    elif resource["type"] == DB_RESOURCE:
        left = cat.instance_states(db)
        if left:
            ctx.send(p.warning_message(f"CDC stays enabled on database {resource['name']}: capture instances not made by dstream remain "
                                       f"({', '.join(i.name for i in left.values())})"))
        else:
            db.execute("EXEC sys.sp_cdc_disable_db")
            ctx.log(f"disabled change data capture on database {resource['name']}")
    ctx.send(p.resource_message("deleted", {"type": resource["type"], "name": resource["name"], "id": resource.get("id", resource["name"]),
                                            "attributes": attrs}))


def destroy(ctx: h.Context) -> None:
    tables, dbs = owned(ctx, TABLE_RESOURCE), owned(ctx, DB_RESOURCE)
    if not tables and not dbs:
        ctx.send(p.streams_message(config_streams(ctx)))
        return
    db = Database(settings(ctx.config), ctx.log)
    for r in tables + dbs:
        disable(ctx, db, r)
    db.close()


def status(ctx: h.Context) -> None:
    db, catalog, tables = connect(ctx)
    ctx.send(p.streams_message([t.describe() for t in tables]))
    max_lsn = db.query(cat.SQL_MAX_LSN)[0][0]
    now, newest = db.query(cat.SQL_LAG)[0]
    lag = None
    if now and newest:
        lag = round((parse(now) - parse(newest)).total_seconds(), 3)
    try:
        jobs: dict[str, Any] = {str(r[1]): {"maxtrans": r[3], "pollinginterval": r[6], "retention_minutes": r[7]} for r in db.query("EXEC sys.sp_cdc_help_jobs")}
    except Exception as exc:  # noqa: BLE001 - needs db_owner; health is optional
        jobs = {"unknown": f"cannot read capture jobs: {exc.args[-1] if getattr(exc, 'args', None) else exc}"}
    for t in tables:
        for inst in t.instances:
            checkpoint = ctx.envelope.checkpoints.get(t.stream)
            st = {"stream": t.stream, "capture_instance": inst.name, "min_lsn": inst.min_lsn.hex() if inst.min_lsn else None,
                  "max_lsn": max_lsn.hex() if max_lsn else None, "checkpoint": checkpoint, "lag_seconds": lag, "capture_jobs": jobs}
            marker = checkpoint.get("snapshot") if isinstance(checkpoint, dict) else None
            running = snap.progress(marker)
            if running is not None and isinstance(marker, dict):
                st["snapshot"] = running
                ctx.log(f"{t.schema}.{t.name}: snapshot {running['state']}"
                        + (f": {snap.describe(marker)}" if running["state"] == "running" else f" ({running['reason']})"))
            ctx.send(p.status_message({"type": TABLE_RESOURCE, "name": f"{t.schema}.{t.name}", "id": inst.name, "attributes": {}}, st))
            ctx.log(f"{t.schema}.{t.name}: {inst.name} min {st['min_lsn']} max {st['max_lsn']} lag {lag}s")
    db.close()


def parse(text: Any) -> dt.datetime:
    if isinstance(text, dt.datetime):
        return text
    return dt.datetime.fromisoformat(str(text)[:26])
