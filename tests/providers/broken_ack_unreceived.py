#!/usr/bin/env python3
"""Deliberately broken output (for the conformance kit): correct, except that a
position-only line is acknowledged one past the position it carried, a position
it never received. Breaks rule: run-acks.

Manages nothing (lifecycle commands answer hello); in run it acknowledges each
data line's position once the line is "delivered" (to nowhere), fails on a line
that is not JSON, naming its line number, after acknowledging what came before.
"""

import json
import signal
import sys


def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def run(lines):
    for lineno, raw in enumerate(lines, start=2):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            send({"type": "error", "message": f"input line {lineno} is not valid JSON"})
            return 1
        if obj.get("type") == "position":
            position = dict(obj["position"])
            position["i"] = position.get("i", 0) + 1  # the defect
            send({"type": "checkpoint", "stream": obj["stream"], "position": position})
        elif "type" not in obj and obj.get("position") is not None:
            send({"type": "checkpoint", "stream": obj["stream"], "position": obj["position"]})
    return 0


def main():
    envelope = json.loads(sys.stdin.readline())
    command = envelope.get("command", "run")
    if command == "run":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # an output drains to EOF
        return run(sys.stdin)
    if command not in ("validate", "plan", "init", "status", "destroy"):
        print(f"broken-ack: unknown command {command!r}", file=sys.stderr)
        return 1
    send({"type": "hello", "protocol": 1, "provider": "broken-ack-unreceived", "version": "0.0.1"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
