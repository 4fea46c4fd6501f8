"""One pyodbc connection with reconnects: which errors mean "connection lost", and backoff with jitter.

Errors that no retry can fix are one CommandFailed line at once: an untrusted server certificate
(naming the two fixes) and, with authentication = "azure", a refused token login.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from typing import Any

from providers import helper as h
from providers.mssql_cdc.config import Settings, with_driver
from providers.mssql_cdc.entra import TokenSource, refuse_freetds
from providers.mssql_cdc.values import install_converters

UNTRUSTED_CERTIFICATE = ("certificate verify failed", "certificate chain", "self-signed certificate", "self signed certificate",
                         "provided certificate doesn't match")
TLS_HINT = ("trust the CA that signed the server's certificate (the system store, or SSL_CERT_FILE=/path/ca.pem for ODBC Driver 18), "
            "or add TrustServerCertificate=yes to connection_string if you knowingly accept an unverified server (Encrypt=strict ignores it)")
LOST_STATES = ("08", "HYT", "01000", "IM")  # communication link, timeouts, FreeTDS's "Unexpected EOF" (01000), driver manager


def is_connection_error(exc: Exception) -> bool:
    state = str(exc.args[0]) if exc.args else ""
    text = " ".join(str(a) for a in exc.args).lower()
    return state.startswith(LOST_STATES) or any(s in text for s in ("communication link", "tcp provider", "unexpected eof", "connection reset",
                                                                    "server closed the connection", "timeout expired"))


LIBODBC_MISSING = "mssql-cdc needs unixODBC's libodbc.so.2, which this host lacks"
LIBODBC_HINT = "install it: apt-get install unixodbc (Debian/Ubuntu) or dnf install unixODBC (RHEL)"


def load_pyodbc() -> Any:
    """pyodbc, or one clear failure naming the package when the system's unixODBC is missing (pyodbc links libodbc.so.2)."""
    try:
        import pyodbc
    except ImportError as exc:
        if "libodbc" not in str(exc):
            raise
        raise h.CommandFailed(LIBODBC_MISSING, hint=LIBODBC_HINT) from None
    return pyodbc


def short(detail: str) -> str:
    """The driver's message without its [vendor][driver] prefixes and (SQLDriverConnect) suffix."""
    text = re.sub(r"^(\s*\[[^\]]*\])+\s*", "", detail.strip())
    return re.sub(r"(\s*\((-?\d+|SQLDriverConnect)\))+$", "", text).strip()


class Database:
    def __init__(self, settings: Settings, log: Callable[[str], None]):
        self.settings = settings
        self.log = log
        self.conn: Any = None
        load_pyodbc()  # before with_driver, which asks pyodbc for the installed drivers
        self.connection_string = with_driver(settings.connection_string, log)
        self.tokens: TokenSource | None = None
        if settings.authentication == "azure":
            refuse_freetds(self.connection_string)
            self.tokens = TokenSource()

    def connect(self) -> None:
        import pyodbc

        attrs = self.tokens.attrs_before() if self.tokens is not None else {}  # a fresh (or still valid) token at each (re)connect
        try:
            self.conn = pyodbc.connect(self.connection_string, autocommit=True, timeout=min(30, self.settings.query_timeout), attrs_before=attrs)
        except pyodbc.Error as exc:
            detail = str(exc.args[-1] if exc.args else exc)
            if any(s in detail.lower() for s in UNTRUSTED_CERTIFICATE):
                raise h.CommandFailed(f"SQL Server's TLS certificate is not trusted: {short(detail)}", hint=TLS_HINT, key="connection_string") from None
            if self.tokens is not None and "18456" in detail:
                raise h.CommandFailed(f"Azure SQL refused the Entra ID token: {short(detail)}",
                                      hint="the identity needs a user in the database: CREATE USER [name] FROM EXTERNAL PROVIDER, then grant it "
                                           "db_owner or the cdc role", key="authentication") from None
            if is_connection_error(exc) or "login" in detail.lower():
                raise
            raise h.CommandFailed(f"cannot connect to SQL Server: {detail}", key="connection_string") from None
        self.conn.timeout = self.settings.query_timeout
        install_converters(self.conn)

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001 - closing a dead connection may fail in any way
                pass
            self.conn = None

    def query(self, sql: str, *params: Any) -> list[Any]:
        if self.conn is None:
            self.connect()
        cursor = self.conn.cursor()
        try:
            cursor.execute(sql, *params)
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def execute(self, sql: str) -> None:
        if self.conn is None:
            self.connect()
        cursor = self.conn.cursor()
        try:
            cursor.execute(sql)
            while cursor.nextset():
                pass
        finally:
            cursor.close()

    def alive(self) -> bool:
        """True when the current connection still answers."""
        if self.conn is None:
            return False
        try:
            cursor = self.conn.cursor()
            cursor.execute("SELECT 1 AS one")
            cursor.fetchall()
            cursor.close()
            return True
        except Exception:  # noqa: BLE001 - any failure means it is gone
            return False

    def reconnect(self, attempt: int, stopping: Callable[[], bool]) -> None:
        """Back off (with jitter), then connect again; the caller retries what failed."""
        self.close()
        delay = min(self.settings.poll_max, self.settings.poll_min * (2 ** min(attempt, 10)))
        delay *= random.uniform(0.5, 1.0)
        end = time.monotonic() + delay
        while time.monotonic() < end and not stopping():
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))
        self.connect()
