#!/usr/bin/env bash
# A legacy (pre-protocol) output provider: it knows nothing of commands.
# Every stdin line - the first (config or command envelope) included - is
# appended to ./legacy.out (cwd = the task file's directory). Nothing is
# written on stdout, so dstream treats it as a provider that manages nothing
# and never acknowledges (no checkpoints). Exits 0 at EOF.

exec 3>>legacy.out || exit 1
while IFS= read -r line || [ -n "$line" ]; do
    printf '%s\n' "$line" >&3
done
exec 3>&-
exit 0
