#!/usr/bin/env bash
# A legacy (pre-protocol) input provider: whatever the first stdin line says,
# it writes 3 change envelopes in the original format (no "stream", no
# "position": the output derives the stream from metadata.TableName, and
# nothing can be checkpointed) and exits 0.

IFS= read -r _config || true   # consume the config line like the original providers

for i in 1 2 3; do
    printf '{"data":{"ID":%d},"metadata":{"TableName":"Legacy","OperationType":"Insert","LSN":"0000002a000001f0%04x"}}\n' "$i" "$((i + 2))"
done
exit 0
