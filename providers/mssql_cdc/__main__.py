"""`python -m providers.mssql_cdc`: the mssql-cdc provider on stdin/stdout."""

import os
import sys

if __package__ in (None, ""):  # run as a plain script: python providers/mssql_cdc
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from providers.mssql_cdc.provider import main

sys.exit(main())
