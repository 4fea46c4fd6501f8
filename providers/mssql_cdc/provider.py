"""`mssql-cdc` input: reads SQL Server change data capture tables.

See docs/mssql-cdc.md. The pieces live beside this module: config (fields,
driver choice), catalog (the fixed SQL statements), values (typed JSON),
position (checkpoints), encode (envelopes), reader (the run loop) and
cdc_admin (validate/plan/init/status/destroy: enabling CDC, start positions).
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a plain script
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from providers import helper as h
from providers.mssql_cdc import cdc_admin
from providers.mssql_cdc.config import FIELDS, settings
from providers.mssql_cdc.db import load_pyodbc

NAME = "mssql-cdc"
VERSION = "1.0.0"


def run(ctx: h.Context) -> None:
    from providers.mssql_cdc.reader import Reader

    Reader(ctx, settings(ctx.config)).run()


def database_errors_reported(handler: h.Handler) -> h.Handler:
    """A lifecycle command that cannot reach or query SQL Server fails with the driver's message, in one line."""

    def wrapped(ctx: h.Context) -> None:
        pyodbc = load_pyodbc()

        try:
            handler(ctx)
        except pyodbc.Error as exc:
            detail = str(exc.args[-1] if exc.args else exc).strip()
            raise h.CommandFailed(f"SQL Server: {detail}", hint="check the server, the network and the credentials in connection_string",
                                    key="connection_string") from None

    return wrapped


HANDLERS = {"validate": cdc_admin.validate, "plan": database_errors_reported(cdc_admin.plan), "init": database_errors_reported(cdc_admin.init),
            "status": database_errors_reported(cdc_admin.status), "destroy": database_errors_reported(cdc_admin.destroy), "run": run,
            "snapshot": database_errors_reported(cdc_admin.snapshot)}


def main() -> int:
    return h.serve(NAME, VERSION, FIELDS, HANDLERS, role="input")


if __name__ == "__main__":
    sys.exit(main())
