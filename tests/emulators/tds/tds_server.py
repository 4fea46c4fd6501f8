"""A TDS 7.4 test server whose database is the SQLite-backed CDC model in tds_engine.

Run as a subprocess: python tests/emulators/tds/tds_server.py [--port 0] [--cert PEM --key PEM]
[--force-encryption] [--entra-only]. It prints "PORT <n>" on stdout once it accepts connections;
stop it by pid.

With --cert it speaks TLS as SQL Server does (see tds_transport): TDS 7.x with the handshake inside
PRELOGIN packets, and TDS 8.0 strict on the same port. --force-encryption is the server's "Force
Encryption" setting (ENCRYPT_REQ to clients that ask OFF). LOGIN7's FEDAUTH feature with a security
token (an Entra ID access token) is accepted when the token is a JWT for Azure SQL's audience that has
not expired; anything else is Msg 18456, as Azure SQL answers. --entra-only (or, at run time,
EXEC dstream_test.entra_only 1|0) refuses password logins: an Azure SQL server with "Microsoft
Entra-only authentication".

Test switches are T-SQL procedures in the dstream_test schema (see tds_engine.switch)
plus, handled here, EXEC dstream_test.drop_connections [@after_rows = N]: close
every other session now, or cut the next result that reaches N rows mid-stream.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import re
import socket
import socketserver
import struct
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tds_wire as w  # noqa: E402
from tds_engine import Engine, Result, Session  # noqa: E402
from tds_sql import SqlError, parse_exec, significant, split_statements, tokenize  # noqa: E402
from tds_transport import Transport, contexts  # noqa: E402
from tds_wire import Reader, SqlType  # noqa: E402

PROC_IDS = {10: "sp_executesql", 11: "sp_prepare", 12: "sp_execute", 13: "sp_prepexec", 15: "sp_unprepare"}
DECL_RE = re.compile(r"(@\w+)")
INT = SqlType("int")
SQL_AUDIENCES = ("https://database.windows.net/", "https://database.windows.net")  # what Azure SQL accepts as a token's aud
LOGIN_FAILED = 18456


class Peer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], database: str, cert: str | None = None, key: str | None = None, force_encryption: bool = False,
                 entra_only: bool = False):
        super().__init__(address, Handler)
        self.tls_contexts = contexts(cert, key or cert) if cert else None
        self.force_encryption = force_encryption
        self.entra_only = entra_only
        self.engine = Engine(database)
        self.spids = itertools.count(51)
        self.handles = itertools.count(1)
        self.sessions: dict[int, Handler] = {}
        self.registry_lock = threading.Lock()
        self.drop_after_rows: tuple[int, int] | None = None  # (rows, spid that asked)
        self.stats = {"connections": 0, "requests": 0}


class Handler(socketserver.BaseRequestHandler):
    server: Peer

    def setup(self) -> None:
        self.packet_size = 4096
        self.session = Session(next(self.server.spids))
        self.descriptor = b""
        self.sock: socket.socket = self.request
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport = Transport(self.sock)
        self.login_only_tls = False
        self.fedauth_required: bool | None = None
        self.fedauth = False  # signed in with an access token
        with self.server.registry_lock:
            self.server.sessions[self.session.spid] = self
            self.server.stats["connections"] += 1

    def finish(self) -> None:
        with self.server.registry_lock:
            self.server.sessions.pop(self.session.spid, None)
        with self.server.engine.lock:
            if self.session.in_tran:
                self.server.engine.rollback(self.session)

    # --- framing ----------------------------------------------------------------

    def recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.transport.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("client closed")
            buf += chunk
        return buf

    def read_message(self) -> tuple[int, bytes]:
        parts = []
        while True:
            ptype, status, length, _, _, _ = w.HEADER.unpack(self.recv_exact(8))
            parts.append(self.recv_exact(length - 8))
            if status & 0x01:
                return ptype, b"".join(parts)

    def send(self, payload: bytes, eom: bool = True) -> None:
        packets = w.packets(w.REPLY, payload, self.packet_size)
        if not eom:
            last = bytearray(packets[-1])
            last[1] = 0
            packets[-1] = bytes(last)
        self.transport.sendall(b"".join(packets))

    def handle(self) -> None:
        try:
            contexts = self.server.tls_contexts
            if contexts and self.transport.starts_with_tls():
                self.transport.start_strict(contexts[1])
            while True:
                ptype, payload = self.read_message()
                self.server.stats["requests"] += 1
                if ptype == w.PRELOGIN:
                    self.prelogin(payload)
                elif ptype == w.LOGIN7:
                    if not self.login(payload):
                        return
                elif ptype == w.SQL_BATCH:
                    r = Reader(payload)
                    r.skip_all_headers()
                    self.batch(payload[r.pos:].decode("utf-16-le"))
                elif ptype == w.RPC:
                    self.rpc(payload)
                elif ptype == w.TM_REQUEST:
                    self.transaction_manager(payload)
                elif ptype == w.ATTENTION:
                    self.send(w.done(w.DONE, w.DONE_ATTN))
                else:
                    return
        except (ConnectionError, OSError):  # ssl.SSLError is an OSError: a client that gave up on the certificate
            return

    # --- login ----------------------------------------------------------------------

    def prelogin(self, payload: bytes) -> None:
        options = w.parse_prelogin(payload)
        if w.PL_FEDAUTHREQUIRED in options:
            self.fedauth_required = True
        asked = (options.get(w.PL_ENCRYPTION) or bytes([w.ENCRYPT_NOT_SUP]))[0]
        contexts = self.server.tls_contexts
        if self.transport.strict:  # already inside TLS: nothing more to negotiate
            self.send(w.prelogin_reply(w.ENCRYPT_NOT_SUP if asked == w.ENCRYPT_NOT_SUP else w.ENCRYPT_ON, self.fedauth_required))
            return
        answer = w.negotiate_encryption(asked, contexts is not None, self.server.force_encryption)
        self.send(w.prelogin_reply(answer, self.fedauth_required))
        if contexts is not None and answer in (w.ENCRYPT_OFF, w.ENCRYPT_ON, w.ENCRYPT_REQ) and asked != w.ENCRYPT_NOT_SUP:
            self.transport.start_prelogin_tls(contexts[0])
            self.login_only_tls = answer == w.ENCRYPT_OFF

    def login_error(self, message: str) -> None:
        self.send(w.error_token(LOGIN_FAILED, message, severity=14) + w.done(w.DONE, w.DONE_ERROR, curcmd=0))

    def check_token(self, token: str | None) -> bool:
        """A JWT whose aud is Azure SQL's and whose exp has not passed (the peer cannot check Entra's signature)."""
        try:
            claims = json.loads(base64.urlsafe_b64decode((token or "").split(".")[1] + "=="))
            return claims.get("aud") in SQL_AUDIENCES and float(claims.get("exp", 0)) > time.time()
        except (IndexError, ValueError, TypeError, AttributeError):
            return False

    def login(self, payload: bytes) -> bool:
        """Answer LOGIN7; False when the login failed (SQL Server then closes the connection)."""
        if self.login_only_tls:
            self.transport.drop_tls()  # ENCRYPT_OFF: the client reads the login reply in clear text
        info = w.parse_login7(payload)
        fedauth = info["features"].get(w.FEATURE_FEDAUTH)
        if fedauth is not None:
            _, token = w.fedauth_token(fedauth)
            if not self.check_token(token):
                self.login_error("Login failed for user '<token-identified principal>'.")
                return False
            self.fedauth = True
        elif self.server.entra_only:
            self.login_error(f"Login failed for user '{info['user']}'.")
            return False
        out = [
            w.envchange(1, w.b_varchar(self.server.engine.database), w.b_varchar("master")),
            w.envchange(7, w.b_varbyte(w.COLLATION), b"\x00"),
            w.envchange(2, w.b_varchar("us_english"), w.b_varchar("")),
            w.envchange(4, w.b_varchar("4096"), w.b_varchar("4096")),
            w.loginack(),
        ]
        if info["feature_ext"]:
            out.append(bytes([w.FEATUREEXTACK, 0xFF]))
        out.append(w.done(w.DONE, 0, curcmd=0))
        self.send(b"".join(out))
        return True

    # --- requests ---------------------------------------------------------------------

    def tran_tokens(self, kind: str | None) -> bytes:
        if kind == "begin":
            self.descriptor = struct.pack("<Q", int(time.time() * 1000) & 0xFFFFFFFFFFFF)
            return w.envchange(8, w.b_varbyte(self.descriptor), b"\x00")
        if kind in ("commit", "rollback"):
            old, self.descriptor = self.descriptor, b""
            return w.envchange(9 if kind == "commit" else 10, b"\x00", w.b_varbyte(old))
        return b""

    def encode(self, results: list[Result], token: int, last_more: bool) -> tuple[bytes, list[int]]:
        """Tokens for results; also the byte offsets just past each row (for the drop switch)."""
        out = bytearray()
        row_ends: list[int] = []
        for i, res in enumerate(results):
            more = w.DONE_MORE if (i < len(results) - 1 or last_more) else 0
            out += self.tran_tokens(res.tran)
            if res.columns is not None:
                types = [t for _, t in res.columns]
                out += w.colmetadata(res.columns)
                for values in res.rows:
                    out += w.row(types, values)
                    row_ends.append(len(out))
            status = more | (w.DONE_COUNT if res.count is not None else 0)
            out += w.done(token, status, res.count or 0)
        return bytes(out), row_ends

    def run_sql(self, sql: str, params: list[Any], names: list[str] | None) -> list[Result]:
        special = self.special(sql)
        if special is not None:
            return special
        return self.server.engine.execute(self.session, sql, params, names)

    def special(self, sql: str) -> list[Result] | None:
        if "sys.dm_exec_connections" in sql.lower():
            return [self.connection_info(sql)]
        if "dstream_test.entra_only" in sql.lower():  # EXEC dstream_test.entra_only 1|0: refuse password logins from now on (sessions stay)
            self.server.entra_only = not sql.rstrip().rstrip(";").endswith("0")
            return [Result()]
        if "dstream_test.drop_connections" not in sql.lower():
            return None
        for stmt in split_statements(tokenize(sql)):
            if significant(stmt)[0].upper in ("EXEC", "EXECUTE"):
                _, args = parse_exec(stmt)
                named = {k: v for k, v in args if k}
                if named.get("@after_rows") is not None:
                    self.server.drop_after_rows = (int(named["@after_rows"]), self.session.spid)
                else:
                    with self.server.registry_lock:
                        others = [h for spid, h in self.server.sessions.items() if spid != self.session.spid]
                    for h in others:
                        try:
                            h.transport.shutdown()
                        except OSError:
                            pass
        return [Result()]

    def connection_info(self, sql: str) -> Result:
        """This session's row of sys.dm_exec_connections (what `SELECT encrypt_option ... WHERE session_id = @@SPID` shows):
        encrypt_option TRUE only when every packet after login is encrypted, as SQL Server reports it."""
        encrypted = self.transport.strict or self.transport.tls is not None
        known = {"session_id": (SqlType("int"), self.session.spid), "encrypt_option": (SqlType("nvarchar", 40), "TRUE" if encrypted else "FALSE"),
                 "protocol_version": (SqlType("int"), 0x08000000 if self.transport.strict else 0x74000004)}
        m = re.search(r"select\s+(.*?)\s+from", sql, re.I | re.S)
        names = [n.strip().lower() for n in (m.group(1) if m else "").split(",")]
        if not names or any(n not in known for n in names):
            raise SqlError(207, f"Invalid column name '{next((n for n in names if n not in known), '')}'.")
        return Result([(n, known[n][0]) for n in names], [tuple(known[n][1] for n in names)])

    def respond(self, payload: bytes, row_ends: list[int]) -> None:
        armed = self.server.drop_after_rows
        if armed and armed[1] != self.session.spid and len(row_ends) >= armed[0]:
            self.server.drop_after_rows = None
            self.send(payload[:row_ends[armed[0] - 1]], eom=False)
            self.transport.shutdown()
            raise ConnectionError("dropped by the test switch")
        self.send(payload)

    def error_reply(self, results: list[Result], exc: SqlError) -> tuple[bytes, list[int]]:
        payload, ends = self.encode(results, w.DONE, True)
        return payload + w.error_token(exc.number, exc.message, exc.severity) + w.done(w.DONE, w.DONE_ERROR), ends

    def batch(self, sql: str) -> None:
        results: list[Result] = []
        try:
            results = self.run_sql(sql, [], None)
            payload, ends = self.encode(results, w.DONE, False)
        except SqlError as exc:
            payload, ends = self.error_reply(results, exc)
        except Exception as exc:  # a peer bug: answer with an error rather than a dead connection
            payload, ends = self.error_reply([], SqlError(50000, f"tdspeer internal error: {exc!r}"))
        self.respond(payload, ends)

    def rpc(self, payload: bytes) -> None:
        r = Reader(payload)
        r.skip_all_headers()
        calls = []
        while not r.done():
            n = r.u16()
            name = PROC_IDS.get(r.u16(), "?") if n == 0xFFFF else r.take(2 * n).decode("utf-16-le")
            flags = r.u16()
            params: list[tuple[str, int, Any]] = []
            while not r.done() and r.data[r.pos] not in (0x80, 0xFF, 0xFE):
                pname = r.b_varchar()
                status = r.u8()
                _, value = w.read_param_value(r)
                params.append((pname, status, value))
            if not r.done():
                r.u8()
            calls.append((name, flags, params))
        out = bytearray()
        all_ends: list[int] = []
        for k, (name, _, params) in enumerate(calls):
            more = k < len(calls) - 1
            body, ends = self.one_rpc(name, params, more)
            all_ends.extend(len(out) + e for e in ends)
            out += body
        self.respond(bytes(out), all_ends)

    def one_rpc(self, name: str, params: list[tuple[str, int, Any]], more: bool) -> tuple[bytes, list[int]]:
        short = name.lower().split(".")[-1].strip("[]")
        results: list[Result] = []
        returns = b""
        try:
            if short in ("sp_prepexec", "sp_prepare"):
                handle = next(self.server.handles)
                decl, stmt = params[1][2] or "", params[2][2]
                self.session.prepared[handle] = (DECL_RE.findall(decl), stmt)
                if short == "sp_prepexec":
                    results = self.run_sql(stmt, [p[2] for p in params[3:]], DECL_RE.findall(decl))
                returns = self.returnvalue(params[0][0], handle)
            elif short == "sp_execute":
                names, stmt = self.session.prepared[int(params[0][2])]
                results = self.run_sql(stmt, [p[2] for p in params[1:]], names)
            elif short == "sp_executesql":
                decl = params[1][2] if len(params) > 1 else ""
                results = self.run_sql(params[0][2], [p[2] for p in params[2:]], DECL_RE.findall(decl or ""))
            elif short == "sp_unprepare":
                self.session.prepared.pop(int(params[0][2]), None)
            else:
                with self.server.engine.lock:
                    results = [self.server.engine.procedure(self.session, name, [(p[0].lower() or None, p[2]) for p in params])]
            body, ends = self.encode(results, w.DONEINPROC, True) if results else (b"", [])
            body += struct.pack("<Bi", w.RETURNSTATUS, 0) + returns + w.done(w.DONEPROC, w.DONE_MORE if more else 0)
            return body, ends
        except Exception as exc:
            if not isinstance(exc, SqlError):
                exc = SqlError(50000, f"tdspeer internal error: {exc!r}")
            body, ends = self.encode(results, w.DONEINPROC, True) if results else (b"", [])
            body += w.error_token(exc.number, exc.message, exc.severity)
            body += struct.pack("<Bi", w.RETURNSTATUS, 1) + w.done(w.DONEPROC, w.DONE_ERROR | (w.DONE_MORE if more else 0))
            return body, ends

    def returnvalue(self, name: str, value: int) -> bytes:
        return (bytes([w.RETURNVALUE]) + struct.pack("<H", 0) + w.b_varchar(name) + b"\x01" + struct.pack("<IH", 0, 0x0001)
                + w.type_info(INT) + w.encode_value(INT, value))

    def transaction_manager(self, payload: bytes) -> None:
        r = Reader(payload)
        r.skip_all_headers()
        kind = r.u16()
        engine, out = self.server.engine, b""
        with engine.lock:
            if kind == 5:  # TM_BEGIN_XACT
                engine.begin(self.session)
                out = self.tran_tokens("begin")
            elif kind in (7, 8):  # TM_COMMIT_XACT, TM_ROLLBACK_XACT
                r.b_varchar()
                flags = r.u8() if not r.done() else 0
                if kind == 7:
                    engine.commit(self.session)
                else:
                    engine.rollback(self.session)
                out = self.tran_tokens("commit" if kind == 7 else "rollback")
                if flags & 0x01:
                    engine.begin(self.session)
                    out += self.tran_tokens("begin")
        self.send(out + w.done(w.DONE, 0))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--database", default="dstream")
    parser.add_argument("--cert", help="PEM: the server's certificate chain (and key, unless --key)")
    parser.add_argument("--key", help="PEM: the server's private key")
    parser.add_argument("--force-encryption", action="store_true")
    parser.add_argument("--entra-only", action="store_true")
    args = parser.parse_args()
    server = Peer((args.host, args.port), args.database, args.cert, args.key, args.force_encryption, args.entra_only)
    sys.stdout.write(f"PORT {server.server_address[1]}\n")
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
