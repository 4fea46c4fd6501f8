"""`asb-queues` output: one Azure Service Bus queue per stream, managed through Resource Manager.

Lifecycle (plan/init/destroy/status) diffs the desired queues against the live
namespace (one GET + one paged list) and the task's state; `run` delivers every
change into its stream's queue in order, with deterministic message ids, and
acknowledges a position only after Service Bus accepted it and everything before
it. The Azure SDKs are imported only by the code paths that use them.
See docs/asb-queues.md.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a plain script
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from providers import helper as h
from providers.asb_queues import delivery, queue_admin
from providers.asb_queues.settings import FIELDS

NAME = "asb-queues"
VERSION = "1.0.0"

HANDLERS = {"validate": queue_admin.validate, "plan": queue_admin.plan, "init": queue_admin.init,
            "destroy": queue_admin.destroy, "status": queue_admin.status, "run": delivery.run}


def main() -> int:
    return h.serve(NAME, VERSION, FIELDS, HANDLERS)


if __name__ == "__main__":
    sys.exit(main())
