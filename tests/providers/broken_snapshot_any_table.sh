#!/bin/sh
# Deliberately broken input (for the conformance kit): shell_input.sh, except that
# `snapshot` answers a checkpoint for whatever table it is given, even one it does
# not have, instead of refusing it. Breaks rule: snapshot.
IFS= read -r envelope || true
case "$envelope" in *'"command":"snapshot"'*)
    echo '{"type":"hello","protocol":1,"provider":"broken-snapshot","version":"0.0.1"}'
    echo '{"type":"checkpoint","stream":"Shell","position":{"seq":0}}'   # whatever the target: the defect
    exit 0 ;;
esac
exec "$(dirname "$0")/shell_input.sh" <<END
$envelope
END
