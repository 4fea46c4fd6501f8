#!/usr/bin/env python3
"""An output provider that echoes its secret config everywhere it can.

Config: connection_string and password (both secret). It repeats them in its
stderr, in a change's `after`, in a resource's id and attributes (under
secret and innocent-looking keys), in a warning and in a status. dstream must
mask all of it. Files it writes itself (in cwd = the task directory):

- provider_argv.log: its own /proc/self/cmdline, one line per process
- provider_seen.log: per command, sha256 of the config values it received
- delivered.jsonl:   the data lines it received in run

With a file named SECRET_FAIL in its working directory it fails with an error that quotes them
(its environment is dstream's allowlist: it cannot be told through a variable).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys


def send(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def log(text: str) -> None:
    sys.stderr.write(f"secret-output: {text}\n")
    sys.stderr.flush()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def main() -> int:
    with open("/proc/self/cmdline", "rb") as handle:
        cmdline = handle.read()
    with open("provider_argv.log", "ab") as handle:
        handle.write(cmdline.replace(b"\0", b" ") + b"\n")
    envelope = json.loads(sys.stdin.buffer.readline())
    command = envelope.get("command", "run")
    config = envelope.get("config") or {}
    conn, password = str(config.get("connection_string", "")), str(config.get("password", ""))
    with open("provider_seen.log", "a") as handle:
        handle.write(f"{command} {sha(conn)} {sha(password)}\n")
    echo = f"endpoint of {conn} with password {password}"
    log(f"{command}: connecting with {conn} as {password}")
    log("config " + json.dumps(config))
    if command == "run":
        last: dict = {}
        count = 0
        with open("delivered.jsonl", "ab") as out:
            for raw in sys.stdin.buffer:
                if not raw.strip():
                    continue
                message = json.loads(raw)
                out.write(raw if raw.endswith(b"\n") else raw + b"\n")
                count += 1
                if "stream" in message and "position" in message:
                    last[message["stream"]] = message["position"]
            out.flush()
            os.fsync(out.fileno())
        for stream, position in last.items():
            send({"type": "checkpoint", "stream": stream, "position": position})
        log(f"run: delivered {count} lines to {conn} (password {password})")
        return 0
    send({"type": "hello", "protocol": 1, "provider": "secret-output", "version": "0.0.1"})
    if os.path.exists("SECRET_FAIL"):
        send({"type": "error", "message": f"cannot connect to {conn} with password {password}", "hint": f"check that {password} is right", "key": "password"})
        return 1
    # what it asks dstream to store holds secrets only under secret keys or in credential form (Key=value);
    # everything it shows (logs, warning, status, error) echoes them verbatim
    attributes = {"connection_string": conn, "password": password, "endpoint": f"endpoint of {conn}", "note": f"PWD={password}"}
    resource = {"type": "connection", "name": "main", "id": f"conn:{conn}", "attributes": attributes}
    known = [r for r in envelope.get("resources") or [] if r.get("type") == "connection"]
    if command == "plan":
        send({"type": "warning", "message": f"talking to {conn} as {password}"})
        if not known:
            send({"type": "change", "action": "create", "resource": {"type": "connection", "name": "main"}, "before": None, "after": attributes, "replace_paths": []})
    elif command == "init":
        for change in envelope.get("changes") or []:
            if change.get("action") == "create":
                send({"type": "resource", "action": "created", "resource": resource})
    elif command == "status":
        for r in known:
            send({"type": "status", "resource": r, "status": {"status": "connected", "endpoint": echo, "credential": password}})
    elif command == "destroy":
        for r in known:
            send({"type": "resource", "action": "deleted", "resource": {**r, "attributes": attributes}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
