#!/bin/sh
# An input with one stream "Flaky": in run it emits two changes, then logs
# why it gives up and exits 9.
IFS= read -r envelope || true
case "$envelope" in
*'"command":"run"'*) ;;
*)
    printf '%s\n' '{"type":"hello","protocol":1,"provider":"failing-input","version":"0.0.1"}'
    printf '%s\n' '{"type":"streams","streams":[{"name":"Flaky","table":"Flaky","schema":"dbo"}]}'
    exit 0
    ;;
esac
for i in 1 2; do
    printf '{"data":{"ID":%d},"metadata":{"TableName":"Flaky","Schema":"dbo","OperationType":"Insert"},"stream":"Flaky","position":{"seq":%d}}\n' "$i" "$i"
done
echo "failing-input: connection reset by peer after 2 changes" >&2
exit 9
