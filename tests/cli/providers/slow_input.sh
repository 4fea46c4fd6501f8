#!/bin/sh
# An input with one stream "Slow": in run it emits one change every 50 ms
# until SIGTERM, then stops at a line boundary and exits 0.
stop=0
trap 'stop=1' TERM
IFS= read -r envelope || true
case "$envelope" in
*'"command":"run"'*) ;;
*)
    printf '%s\n' '{"type":"hello","protocol":1,"provider":"slow-input","version":"0.0.1"}'
    printf '%s\n' '{"type":"streams","streams":[{"name":"Slow","table":"Slow","schema":"dbo"}]}'
    exit 0
    ;;
esac
i=1
while [ "$stop" -eq 0 ]; do
    printf '{"data":{"ID":%d},"metadata":{"TableName":"Slow","Schema":"dbo","OperationType":"Insert"},"stream":"Slow","position":{"seq":%d}}\n' "$i" "$i"
    i=$((i + 1))
    sleep 0.05
done
exit 0
