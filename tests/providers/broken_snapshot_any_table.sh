#!/bin/sh
# Deliberately broken input (for the conformance kit): correct, except that
# `snapshot` answers a checkpoint for whatever table it is given, even one it
# does not have, instead of refusing it. Breaks rule: snapshot.
stop=0
trap 'stop=1' TERM
IFS= read -r envelope || true
case "$envelope" in
*'"command":"snapshot"'*)
    echo '{"type":"hello","protocol":1,"provider":"broken-snapshot","version":"0.0.1"}'
    echo '{"type":"checkpoint","stream":"Broken","position":{"seq":0}}'   # whatever the target: the defect
    exit 0 ;;
*'"command":"run"'*) ;;
*'"command":"validate"'* | *'"command":"plan"'* | *'"command":"init"'* | *'"command":"status"'* | *'"command":"destroy"'*)
    echo '{"type":"hello","protocol":1,"provider":"broken-snapshot","version":"0.0.1"}'
    echo '{"type":"streams","streams":[{"name":"Broken","table":"Broken","schema":"dbo"}]}'
    exit 0 ;;
*'"command":'*)
    echo "broken-snapshot: error: unknown command" >&2
    exit 1 ;;
esac
# run (or a bare config): changes seq 1..3, resuming after a checkpoint {"Broken":{"seq":N}}; follows until SIGTERM unless once
seq=$(printf '%s\n' "$envelope" | sed -n 's/.*"Broken":{"seq":\([0-9]*\)}.*/\1/p')
i=$((${seq:-0} + 1))
while [ "$stop" -eq 0 ]; do
    if [ "$i" -le 3 ]; then
        printf '{"data":{"ID":%d},"metadata":{"TableName":"Broken","OperationType":"Insert"},"stream":"Broken","position":{"seq":%d}}\n' "$i" "$i"
        i=$((i + 1))
    else
        case "$envelope" in *'"once":true'*) exit 0 ;; esac
        sleep 0.1
    fi
done
exit 0
