"""Fault injection across mssql-cdc → asb-queues; `scenario` is shared with bench/soak.py."""

import sys
from pathlib import Path

_EMULATORS = str(Path(__file__).resolve().parents[1] / "emulators")  # servicebus_peers, as tests/asb imports it
if _EMULATORS not in sys.path:
    sys.path.insert(0, _EMULATORS)
