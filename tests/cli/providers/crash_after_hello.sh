#!/bin/sh
# A provider that says hello, logs one line and crashes with exit code 7.
IFS= read -r _envelope || true
printf '%s\n' '{"type":"hello","protocol":1,"provider":"crash","version":"0.0.1"}'
echo "crash: segmentation fault in the flux capacitor" >&2
exit 7
