"""The byte stream under the TDS peer's packets: clear TCP, or TLS in either of SQL Server's two forms.

- TDS 7.x (Encrypt=yes, and FreeTDS's default): after the PRELOGIN exchange the TLS handshake
  records travel as the payload of TDS packets of type PRELOGIN (0x12), both ways (MS-TDS 2.2.6.5:
  "In TDS 7.x, this message stream is also used to wrap the SSL handshake payload"; go-mssqldb's
  tlsHandshakeConn expects 0x12 from the server too). Once the handshake is done, TLS records run
  straight over TCP with the TDS packets inside them. When the client asked ENCRYPT_OFF only
  LOGIN7 is encrypted: both sides then drop TLS without a close_notify and go on in clear text.
  SQL Server negotiates at most TLS 1.2 in this form (TLS 1.3 needs TDS 8.0), and so does the peer.
- TDS 8.0 (Encrypt=strict): TLS from the first byte, ALPN "tds/8.0", then PRELOGIN and the rest inside.
  The peer tells the two apart by the first byte: 0x16 is a TLS handshake record, 0x12 a PRELOGIN.
"""

from __future__ import annotations

import socket
import ssl
import struct

HEADER = struct.Struct(">BBHHBB")
PRELOGIN = 0x12
TLS_HANDSHAKE_RECORD = 0x16


def contexts(cert: str, key: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(TDS 7.x context, TDS 8.0 context) for the server certificate chain in `cert`."""
    legacy = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    legacy.load_cert_chain(cert, key)
    legacy.maximum_version = ssl.TLSVersion.TLSv1_2
    strict = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    strict.load_cert_chain(cert, key)
    strict.minimum_version = ssl.TLSVersion.TLSv1_2
    strict.set_alpn_protocols(["tds/8.0"])
    return legacy, strict


class Transport:
    """recv/sendall for one client connection, whichever form of encryption it is in."""

    def __init__(self, sock: socket.socket):
        self.raw = sock
        self.sock: socket.socket = sock  # the raw socket, or an SSLSocket in TDS 8.0
        self.tls: ssl.SSLObject | None = None  # TLS over the raw socket in TDS 7.x
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.strict = False

    # --- TDS 8.0 -------------------------------------------------------------------

    def starts_with_tls(self) -> bool:
        first = self.raw.recv(1, socket.MSG_PEEK)
        return bool(first) and first[0] == TLS_HANDSHAKE_RECORD

    def start_strict(self, context: ssl.SSLContext) -> None:
        """TLS before any TDS packet; the client must offer ALPN tds/8.0, as SQL Server 2022 requires."""
        tls = context.wrap_socket(self.raw, server_side=True)
        if tls.selected_alpn_protocol() != "tds/8.0":
            tls.close()
            raise ConnectionError("TDS 8.0 client did not negotiate ALPN tds/8.0")
        self.sock = tls
        self.strict = True

    # --- TDS 7.x: handshake inside PRELOGIN packets ---------------------------------

    def start_prelogin_tls(self, context: ssl.SSLContext) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush_wrapped()
                self.incoming.write(self._read_wrapped())
        self._flush_wrapped()  # ChangeCipherSpec + Finished, still wrapped: the client's handshake is not done without them
        self.tls = tls

    def _read_wrapped(self) -> bytes:
        parts = []
        while True:
            ptype, status, length, _, _, _ = HEADER.unpack(self._raw_exact(HEADER.size))
            if ptype != PRELOGIN:
                raise ConnectionError(f"expected a PRELOGIN packet carrying TLS, got type 0x{ptype:02x}")
            parts.append(self._raw_exact(length - HEADER.size))
            if status & 0x01:
                return b"".join(parts)

    def _flush_wrapped(self) -> None:
        data = self.outgoing.read()
        if data:
            chunk = 4096 - HEADER.size
            out = b""
            for i in range(0, len(data), chunk):
                part = data[i:i + chunk]
                last = i + chunk >= len(data)
                out += HEADER.pack(PRELOGIN, 1 if last else 0, len(part) + HEADER.size, 0, 0, 0) + part
            self.raw.sendall(out)

    def drop_tls(self) -> None:
        """After LOGIN7 when the client asked ENCRYPT_OFF: clear text from here on (no close_notify, as SQL Server)."""
        self.tls = None

    # --- bytes ----------------------------------------------------------------------

    def _raw_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.raw.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("client closed")
            buf += chunk
        return buf

    def recv(self, n: int) -> bytes:
        if self.tls is None:
            return self.sock.recv(n)
        while True:
            try:
                return self.tls.read(n)
            except ssl.SSLWantReadError:
                data = self.raw.recv(65536)
                if not data:
                    return b""
                self.incoming.write(data)
            except ssl.SSLZeroReturnError:
                return b""

    def sendall(self, data: bytes) -> None:
        if self.tls is None:
            self.sock.sendall(data)
            return
        self.tls.write(data)
        self.raw.sendall(self.outgoing.read())

    def shutdown(self) -> None:
        self.raw.shutdown(socket.SHUT_RDWR)
