#!/bin/sh
# An output that manages nothing (hello only) and, in run, reads its envelope
# and two data lines, logs why it gives up and exits 3.
IFS= read -r envelope || true
case "$envelope" in
*'"command":"run"'*) ;;
*)
    printf '%s\n' '{"type":"hello","protocol":1,"provider":"failing-output","version":"0.0.1"}'
    exit 0
    ;;
esac
IFS= read -r _one || true
IFS= read -r _two || true
echo "failing-output: received 2 lines" >&2
echo "failing-output: disk quota exceeded on /dev/sdz" >&2
exit 3
