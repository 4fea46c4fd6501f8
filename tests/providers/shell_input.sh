#!/usr/bin/env bash
# A dstream input provider in plain bash (no python, no jq: bash + sed only),
# proving that provider protocol v1 (docs/protocol.md) is language independent.
#
# Lifecycle commands (validate|plan|init|status|destroy): hello + one stream "Shell".
# snapshot (dstream snapshot --table dbo.Shell): hello + the checkpoint {"seq":0}, from which a
# run emits every row again; any other table is an error naming it.
# run (or a bare config object): emits changes seq N+1..count for stream "Shell",
# where count comes from the config (default 3) and N from the checkpoint
# {"checkpoints":{"Shell":{"seq":N}}} (default 0). Stops at a line boundary on SIGTERM.
#
# The JSON "parsing" below is sed over the single envelope line; good enough for
# a test provider whose config is flat.

set -u

stop=0
trap 'stop=1' TERM

envelope=
IFS= read -r envelope || true   # the first line (a last line without newline still counts)
case "$envelope" in *[![:space:]]*) ;; *)
    printf '%s\n' '{"type":"error","message":"no command envelope on stdin"}'
    echo "shell-input: error: no command envelope on stdin" >&2
    exit 1
    ;;
esac

# "command":"plan" -> plan; empty when absent (a bare config object means run)
command=$(printf '%s\n' "$envelope" | sed -n 's/.*"command"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p')

case "$command" in
validate | plan | init | status | destroy)
    printf '%s\n' '{"type":"hello","protocol":1,"provider":"shell-input","version":"1.0.0"}'
    printf '%s\n' '{"type":"streams","streams":[{"name":"Shell","table":"Shell","schema":"dbo"}]}'
    exit 0
    ;;
snapshot)
    target=$(printf '%s\n' "$envelope" | sed -n 's/.*"target"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p')
    case "$target" in Shell | dbo.Shell) ;; *)
        printf '{"type":"error","message":"no table %s: this input has dbo.Shell only"}\n' "$target"
        echo "shell-input: error: no table $target" >&2
        exit 1
        ;;
    esac
    printf '%s\n' '{"type":"hello","protocol":1,"provider":"shell-input","version":"1.0.0"}'
    printf '%s\n' '{"type":"checkpoint","stream":"Shell","position":{"seq":0}}'
    exit 0
    ;;
run | "") ;;
*)
    printf '{"type":"error","message":"unknown command %s"}\n' "$command"
    echo "shell-input: error: unknown command $command" >&2
    exit 1
    ;;
esac

# "count":5 anywhere in the line (the config is flat); default 3
count=$(printf '%s\n' "$envelope" | sed -n 's/.*"count"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p')
count=${count:-3}

# "checkpoints":{..."Shell":{"seq":N}...} -> N; default 0
done_seq=$(printf '%s\n' "$envelope" |
    sed -n 's/.*"checkpoints"[[:space:]]*:[[:space:]]*{\(.*\)/\1/p' |
    sed -n 's/.*"Shell"[[:space:]]*:[[:space:]]*{[[:space:]]*"seq"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p')
done_seq=${done_seq:-0}

echo "shell-input: emitting seq $((done_seq + 1))..$count" >&2

i=$((done_seq + 1))
while [ "$i" -le "$count" ] && [ "$stop" -eq 0 ]; do
    printf '{"data":{"ID":%d,"Name":"shell-%d"},"metadata":{"TableName":"Shell","Schema":"dbo","OperationType":"Insert","OperationID":2,"LSN":"%020x","Seq":"%020x"},"stream":"Shell","position":{"seq":%d}}\n' \
        "$i" "$i" "$i" "$i" "$i"
    i=$((i + 1))
done
exit 0
