"""`python -m providers.asb_queues`: the asb-queues provider on stdin/stdout."""

import os
import sys

if __package__ in (None, ""):  # run as a plain script: python providers/asb_queues
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from providers.asb_queues.provider import main

sys.exit(main())
