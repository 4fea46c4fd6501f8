#!/bin/sh
# A provider that says hello and then writes a line that is not JSON.
IFS= read -r _envelope || true
printf '%s\n' '{"type":"hello","protocol":1,"provider":"garbage","version":"0.0.1"}'
printf '%s\n' 'this is not json at all'
exit 0
