#!/usr/bin/env python3
"""A provider that misbehaves on purpose, as its config says (configs come on stdin, as always).

Config keys (all optional):
- role: "input" (default) or "output".
- behaviour: one of
  sleep_before_hello   sleeps `seconds` before writing anything
  hang_after_hello     says hello, then sleeps `seconds`
  never_read_stdin     (a file NEVER_READ_STDIN in its directory: the config cannot say it, it is never read)
                       sleeps 60 s without reading its envelope
  die_mid_line         input run: 3 changes, half a line, then SIGKILL to itself
  ignore_sigterm       input run: a change every 0.1 s for ever, SIGTERM ignored
  dump_environment     writes its environment to env.json, then behaves normally
  own_and_fail_destroy input: owns a resource "db"; init creates it, destroy fails
  bad_ack_stream       output run: acknowledges a stream that was never sent
  null_position        output run: acknowledges with "position": null
  unknown_type         output run: writes {"type": "surprise"}
  slow_exit            output run: ignores SIGTERM (it drains, as outputs do), says so in a file output-ready, takes `seconds` to deliver, then acknowledges
  bad_status           output status: a status message whose resource is a string
  protocol_2           says hello with protocol 2
- seconds: for the sleeping behaviours (default 30).
- count: changes an input emits in run (default 3).
"""

import json
import os
import signal
import sys
import time

STREAMS = [{"name": "S", "table": "S", "schema": "dbo"}]


def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def change(i):
    return {"data": {"ID": i}, "metadata": {"TableName": "S", "OperationType": "Insert"}, "stream": "S", "position": {"i": i}}


def main():
    if "never_read_stdin" in sys.argv[1:] or os.path.exists("NEVER_READ_STDIN"):
        time.sleep(60)
    first = sys.stdin.buffer.readline()
    envelope = json.loads(first)
    config = envelope.get("config") or {}
    behaviour, seconds = config.get("behaviour", ""), float(config.get("seconds", 30))
    role, command = config.get("role", "input"), envelope.get("command", "run")
    if behaviour == "dump_environment":
        with open(f"env-{role}.json", "w") as handle:
            json.dump(dict(os.environ), handle)
    if behaviour == "sleep_before_hello":
        time.sleep(seconds)
    if command != "run":
        send({"type": "hello", "protocol": 2 if behaviour == "protocol_2" else 1, "provider": "scripted", "version": "0.0.1"})
        if behaviour == "hang_after_hello":
            time.sleep(seconds)
        if role == "input":
            send({"type": "streams", "streams": STREAMS})
        lifecycle(envelope, config, role, command, behaviour)
        return 0
    if role == "output":
        return output_run(behaviour, seconds)
    return input_run(envelope, config, behaviour)


def lifecycle(envelope, config, role, command, behaviour):
    owned = [r for r in envelope.get("resources") or []]
    if behaviour == "own_and_fail_destroy":
        db = {"type": "database", "name": "db", "id": "db", "attributes": {}}
        if command == "plan" and not owned:
            send({"type": "change", "action": "create", "resource": {"type": "database", "name": "db"}, "before": None, "after": {}, "replace_paths": []})
        elif command == "init" and any(c["action"] == "create" for c in envelope.get("changes") or []):
            send({"type": "resource", "action": "created", "resource": db})
        elif command == "destroy":
            send({"type": "error", "message": "the database refuses to be destroyed"})
            sys.exit(1)
    if behaviour == "bad_status" and command == "status":
        send({"type": "status", "resource": "not-an-object", "status": {}})


def input_run(envelope, config, behaviour):
    if behaviour == "ignore_sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        i = 0
        while True:
            i += 1
            send(change(i))
            time.sleep(0.1)
    start = int(((envelope.get("checkpoints") or {}).get("S") or {}).get("i", 0))
    for i in range(start + 1, int(config.get("count", 3)) + 1):
        send(change(i))
    if behaviour == "die_mid_line":
        sys.stdout.write('{"data": {"ID": 99}, "metad')
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return 0


def output_run(behaviour, seconds):
    if behaviour == "slow_exit":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open("output-ready", "w").close()
    last = None
    for raw in sys.stdin.buffer:
        if raw.strip():
            last = json.loads(raw).get("position")
    if behaviour == "bad_ack_stream":
        send({"type": "checkpoint", "stream": "NotAStream", "position": last})
    elif behaviour == "null_position":
        send({"type": "checkpoint", "stream": "S", "position": None})
    elif behaviour == "unknown_type":
        send({"type": "surprise"})
    elif behaviour == "slow_exit":
        time.sleep(seconds)  # still delivering what it read
    if last is not None and behaviour in ("", "slow_exit"):
        send({"type": "checkpoint", "stream": "S", "position": last})
    return 0


if __name__ == "__main__":
    sys.exit(main())
