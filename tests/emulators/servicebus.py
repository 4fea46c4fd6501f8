"""A Service Bus stand-in speaking AMQP 1.0 (python-qpid-proton), for tests and benchmarks.

Run as a process: python tests/emulators/servicebus.py --port P --namespace NS --dir DIR
    [--tls HOST:PORT --cert CERT.pem --key KEY.pem] [--jwt-key-file FILE]

What it does, as azure-servicebus 7.15 needs it (see shared/reference/local-peers.md):
- Plain AMQP on 127.0.0.1:PORT (connection strings with UseDevelopmentEmulator=true)
  and, with --tls, AMQPS on HOST:PORT (the SDK with a token credential dials
  <fully_qualified_namespace>:5671 over TLS and drops any port it is given).
- SASL ANONYMOUS, then the `$cbs` put-token exchange. Tokens are checked as the
  service checks them (Service Bus AMQP protocol guide, "Claims-based
  authorization": the reply's status-code is an HTTP code; a sender link needs a
  token put for its entity; "When a token expires, Service Bus promptly drops all
  links on the connection to the respective entity"):
  - a `jwt` (an Entra token, what DefaultAzureCredential gives) must be signed
    with the key in --jwt-key-file (HS256: the stand-in `az` signs with it; Entra
    signs RS256, the check is the same in kind), carry the Service Bus audience
    (https://servicebus.azure.net, with or without the trailing slash: Entra
    echoes the resource as asked, and the SDK asks https://servicebus.azure.net//.default),
    and not be expired (exp) or not yet valid (nbf). Otherwise 401, the link
    attach that follows is refused (amqp:unauthorized-access). Without
    --jwt-key-file every jwt is refused (the stricter choice).
  - a SAS token (`SharedAccessSignature sr=..&sig=..&se=..&skn=..`, what a
    connection string gives) is accepted as before, and expires at its `se`.
  - a link whose entity's token on its connection expired is detached with
    amqp:unauthorized-access; the client must put a fresh token before then.
- Sender links to a queue: attach advertises the tier's max message size
  (256 KB Basic/Standard, 1 MB Premium); transfers are single messages or SDK
  batches (one data section per encoded inner message); a whole transfer is
  accepted or rejected. Oversized transfers are rejected (message-size-exceeded).
- Duplicate detection per queue (message_id seen within the window → dropped),
  as configured in the shared model file the ARM peer writes (DIR/model.json).
  Unknown queues are refused at attach with amqp:not-found. Namespace and queue
  names are case-insensitive, as in Service Bus.
- Receiver links (peek-lock or receive-and-delete) for assertions through the
  real SDK: 16-byte lock tokens, x-opt-* annotations; complete/abandon/dead-letter.
- Switches, read from DIR/control.json whenever it changes:
  {"server_busy": N}  reject the next N transfers with com.microsoft:server-busy;
  {"drop": N}         store the next N transfers, then close the connection
                      (amqp:connection:forced) without acknowledging them;
  {"drop_unstored": N} the same, without storing;
  {"busy_after": N}   accept N more transfers, then reject every one as server-busy.
- Statistics in DIR/stats.json (per queue: active, dead-lettered, accepted,
  duplicates; transfers, rejections, drops, tokens, jwt_tokens, refused_tokens,
  refused_links, expired_links, tls_connections), rewritten ~10 times/s.
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import hmac
import json
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proton import Condition, Data, Delivery, Described, Endpoint, Link, Message, SSLDomain, symbol, timestamp, ulong
from proton.handlers import FlowController
from proton.reactor import Container

sys.path.insert(0, str(Path(__file__).resolve().parent))
import servicebus_model as model  # noqa: E402

BATCH_SECTION = 0x75  # data
ANNOTATIONS_SECTION = 0x72
LOCK_SECONDS = 60.0
AUDIENCES = ("https://servicebus.azure.net", "https://servicebus.azure.net/")  # what an Entra token for Service Bus carries as aud
CLOCK_SKEW = 5.0  # seconds of nbf tolerance (exp gets none: an expired token is refused)
log = logging.getLogger("servicebus-peer")


class TokenRefused(Exception):
    """A put-token the service would answer 401; the message is its status-description."""


def b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_jwt(token: str, key: bytes | None, now: float) -> float:
    """A Service Bus Entra token: signature, audience, validity. Returns its expiry (epoch seconds)."""
    if key is None:
        raise TokenRefused("InvalidIssuer: this namespace accepts no Entra tokens (the peer has no signing key).")
    try:
        head, body, signature = token.split(".")
        header, claims = json.loads(b64url(head)), json.loads(b64url(body))
        given = b64url(signature)
    except (ValueError, TypeError):
        raise TokenRefused("InvalidToken: the token is not a JSON Web Token.") from None
    if header.get("alg") != "HS256" or not hmac.compare_digest(given, hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()):
        raise TokenRefused("InvalidSignature: the token's signature is not valid.")
    audience = claims.get("aud")
    if audience not in AUDIENCES:
        raise TokenRefused(f"InvalidAudience: the token's audience {audience!r} is not https://servicebus.azure.net.")
    expires = float(claims.get("exp", 0))
    if expires <= now:
        raise TokenRefused(f"ExpiredToken: the token expired at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(expires))}.")
    if float(claims.get("nbf", 0)) > now + CLOCK_SKEW:
        raise TokenRefused("InvalidToken: the token is not valid yet (nbf).")
    return expires


def sas_expiry(token: str) -> float:
    """`se` of a SharedAccessSignature (its signature is the connection string peers' business, not checked here)."""
    fields = dict(part.split("=", 1) for part in token[len("SharedAccessSignature "):].split("&") if "=" in part)
    try:
        return float(fields.get("se", "inf"))
    except ValueError:
        raise TokenRefused("InvalidToken: the SAS token's expiry (se) is not a number.") from None


def entity_of(address: str) -> str:
    """The entity a token name or link address is for: its last path segment, folded ("" = the namespace)."""
    text = address.split("://", 1)[-1]
    path = text.split("/", 1)[1] if "/" in text else ""
    return path.rstrip("/").rsplit("/", 1)[-1].lower()


@dataclass
class Stored:
    raw: bytes
    sequence: int
    enqueued_ms: int
    deliveries: int = 0


@dataclass
class QueueData:
    name: str
    incarnation: str = ""  # the ARM peer's: a queue deleted and made again starts empty
    messages: collections.deque[Stored] = field(default_factory=collections.deque)
    dead: list[Stored] = field(default_factory=list)
    seen: dict[str, float] = field(default_factory=dict)  # message_id -> time first accepted
    accepted: int = 0
    duplicates: int = 0
    sequence: int = 0


def sections(raw: bytes) -> list[tuple[int, bytes]]:
    """Split an encoded AMQP message into (descriptor code, encoded section)."""
    out: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(raw):
        data = Data()
        used = data.decode(raw[offset:])
        if used <= 0:
            raise ValueError("cannot decode message section")
        value = data.get_object()
        code = int(value.descriptor) if isinstance(value, Described) and isinstance(value.descriptor, int) else -1
        out.append((code, bytes(raw[offset:offset + used])))
        offset += used
    return out


def data_payload(section: bytes) -> bytes:
    data = Data()
    data.decode(section)
    value = data.get_object()
    return bytes(value.value)


def unpack(raw: bytes) -> list[bytes]:
    """An SDK batch (every body section a data section holding a message) → its messages."""
    try:
        parts = sections(raw)
    except Exception:
        return [raw]
    bodies = [s for code, s in parts if code in (0x75, 0x76, 0x77)]
    if not bodies or any(code != BATCH_SECTION for code, s in parts if code in (0x76, 0x77)):
        return [raw]
    payloads = [data_payload(s) for s in bodies]
    if not all(len(p) > 3 and p[0] == 0 and p[1] == 0x53 and 0x70 <= p[2] <= 0x78 for p in payloads):
        return [raw]
    return payloads


def annotate(raw: bytes, values: dict[str, Any]) -> bytes:
    """Re-encode a stored message with broker annotations merged into its message annotations."""
    parts = sections(raw)
    merged: dict[Any, Any] = {}
    for code, s in parts:
        if code == ANNOTATIONS_SECTION:
            data = Data()
            data.decode(s)
            merged.update(data.get_object().value or {})
    merged.update({symbol(k): v for k, v in values.items()})
    data = Data()
    data.put_object(Described(ulong(ANNOTATIONS_SECTION), merged))
    encoded = data.encode()
    head = [s for code, s in parts if code in (0x70, 0x71)]
    tail = [s for code, s in parts if code not in (0x70, 0x71, ANNOTATIONS_SECTION)]
    return b"".join(head) + encoded + b"".join(tail)


def error(name: str, description: str) -> Condition:
    """An AMQP error with all three fields: the SDK indexes `info` and hangs when it is omitted."""
    return Condition(name, description, {symbol("com.microsoft:tracking-id"): str(uuid.uuid4())})


class Broker(FlowController):
    def __init__(self, port: int, namespace: str, directory: Path, tls: tuple[str, int, SSLDomain] | None = None, jwt_key: bytes | None = None):
        super().__init__(window=500)
        self.port = port
        self.tls = tls
        self.jwt_key = jwt_key
        self.tokens: dict[tuple[Any, str], float] = {}  # (connection, entity) -> expiry of the token put for it
        self.entity_links: list[Link] = []  # open links to queues, watched for token expiry
        self.namespace = namespace
        self.model_path = directory / "model.json"
        self.control_path = directory / "control.json"
        self.stats_path = directory / "stats.json"
        self.model_mtime = -1.0
        self.control_mtime = -1.0
        self.ns: dict[str, Any] = {}
        self.queues: dict[str, QueueData] = {}
        self.faults: dict[str, int] = {}
        self.stats: dict[str, int] = collections.Counter()
        self.cbs_replies: dict[Any, Link] = {}  # connection -> its $cbs receiver-side link (we send on it)
        self.locked: dict[bytes, tuple[QueueData, Stored, Link]] = {}
        self.consumers: list[Link] = []
        self.dirty = True

    # --- model, control, stats ------------------------------------------------------

    def reload(self) -> None:
        try:
            mtime = self.model_path.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = 0
        if mtime == self.model_mtime:
            return
        self.model_mtime = mtime
        self.ns = model.namespace(model.load(self.model_path), self.namespace)
        live = {name.lower(): props.get(model.INCARNATION, "") for name, props in self.ns.get("queues", {}).items()}
        for key, q in list(self.queues.items()):
            if live.get(key) != q.incarnation:  # deleted (or replaced) through ARM: its messages are gone
                del self.queues[key]

    def control(self) -> None:
        try:
            mtime = self.control_path.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if mtime != self.control_mtime:
            self.control_mtime = mtime
            try:
                self.faults = {k: int(v) for k, v in json.loads(self.control_path.read_text()).items()}
            except (ValueError, AttributeError):
                self.faults = {}

    def take_fault(self, name: str) -> bool:
        if self.faults.get(name, 0) > 0:
            self.faults[name] -= 1
            return True
        return False

    def write_stats(self) -> None:
        queues = {q.name: {"active": len(q.messages) + sum(1 for v in self.locked.values() if v[0] is q), "dead_letter": len(q.dead),
                           "accepted": q.accepted, "duplicates": q.duplicates} for q in self.queues.values()}
        body = {"queues": queues, **self.stats}
        tmp = self.stats_path.with_name("stats.json.tmp")
        tmp.write_text(json.dumps(body, sort_keys=True))
        os.replace(tmp, self.stats_path)

    def on_timer_task(self, event: Any) -> None:
        self.expire_links()
        if self.dirty:
            self.write_stats()
            self.dirty = False
        event.reactor.schedule(0.1, self)

    def queue(self, address: str) -> QueueData | None:
        self.reload()
        name = address.rstrip("/").rsplit("/", 1)[-1]
        found = model.find_queue(self.ns, name)
        if found is None:
            return None
        real, props = found
        return self.queues.setdefault(real.lower(), QueueData(real, props.get(model.INCARNATION, "")))

    def properties(self, q: QueueData) -> dict[str, Any]:
        found = model.find_queue(self.ns, q.name)
        return found[1] if found else {}

    # --- connection setup -------------------------------------------------------------

    def on_reactor_init(self, event: Any) -> None:
        if self.tls is not None:  # first: the plain port accepting means both are ready
            host, port, domain = self.tls
            event.container.listen(f"amqps://{host}:{port}", ssl_domain=domain)
            print(f"servicebus peer listening on amqps://{host}:{port}", flush=True)
        event.container.listen(f"127.0.0.1:{self.port}")
        event.reactor.schedule(0.1, self)
        print(f"servicebus peer listening on 127.0.0.1:{self.port}", flush=True)

    def on_connection_bound(self, event: Any) -> None:
        sasl = event.transport.sasl()
        sasl.allowed_mechs("ANONYMOUS")
        self.stats["connections"] += 1
        if getattr(event.transport, "_ssl", None) is not None:  # set by the TLS acceptor before binding
            self.stats["tls_connections"] += 1
        self.dirty = True

    # --- claims-based security ----------------------------------------------------------

    def put_token(self, connection: Any, props: dict[Any, Any], body: Any) -> tuple[int, str]:
        """One put-token: (status-code, status-description), as the service answers it."""
        self.stats["tokens"] += 1
        self.dirty = True
        token = body.decode() if isinstance(body, bytes) else str(body or "")
        now = time.time()
        try:
            if token.startswith("SharedAccessSignature "):
                expires = sas_expiry(token)
            elif str(props.get("type")) == "jwt":
                self.stats["jwt_tokens"] += 1
                expires = check_jwt(token, self.jwt_key, now)
            else:
                raise TokenRefused(f"InvalidToken: unsupported token type {props.get('type')!r}.")
            if expires <= now:
                raise TokenRefused("ExpiredToken: the token has expired.")
        except TokenRefused as exc:
            self.stats["refused_tokens"] += 1
            return 401, str(exc)
        self.tokens[(connection, entity_of(str(props.get("name") or "")))] = expires
        return 202, "Accepted"

    def token_expiry(self, connection: Any, address: str) -> float | None:
        """When the token that authorises `address` on this connection expires (a namespace-wide one counts)."""
        found = [self.tokens.get((connection, entity_of(address))), self.tokens.get((connection, ""))]
        known = [t for t in found if t is not None]
        return max(known) if known else None

    def expire_links(self) -> None:
        now = time.time()
        for link in list(self.entity_links):
            if link.state & Endpoint.LOCAL_CLOSED:
                self.entity_links.remove(link)
                continue
            expires = self.token_expiry(link.connection, self.link_address(link))
            if expires is None or expires <= now:
                self.entity_links.remove(link)
                self.stats["expired_links"] += 1
                self.dirty = True
                link.condition = error("amqp:unauthorized-access", "ExpiredToken: the token authorising this link has expired; put a new token through $cbs.")
                link.close()
                self.forget(link)

    @staticmethod
    def link_address(link: Link) -> str:
        return (link.remote_target.address if link.is_receiver else link.remote_source.address) or ""

    def on_connection_remote_open(self, event: Any) -> None:
        if event.connection.state & Endpoint.LOCAL_UNINIT:
            event.connection.open()

    def on_session_remote_open(self, event: Any) -> None:
        if event.session.state & Endpoint.LOCAL_UNINIT:
            event.session.open()

    def on_link_remote_open(self, event: Any) -> None:
        link = event.link
        if not link.state & Endpoint.LOCAL_UNINIT:
            return
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        address = (link.remote_target.address if link.is_receiver else link.remote_source.address) or ""
        if address.endswith("$cbs") or address.endswith("$management"):
            if link.is_sender:
                self.cbs_replies[(link.connection, address.rsplit("/", 1)[-1])] = link
            link.open()
            return
        q = self.queue(address)
        if q is None:
            link.open()
            link.condition = error("amqp:not-found", f"The messaging entity '{self.namespace}:queue:{address.rsplit('/', 1)[-1]}' could not be found.")
            link.close()
            return
        expires = self.token_expiry(link.connection, address)
        if expires is None or expires <= time.time():
            self.stats["refused_links"] += 1
            self.dirty = True
            link.open()
            claim = "Send" if link.is_receiver else "Listen"
            link.condition = error("amqp:unauthorized-access", f"Unauthorized access. '{claim}' claim(s) are required to perform this operation.")
            link.close()
            return
        self.entity_links.append(link)
        if link.is_receiver:
            link.max_message_size = model.TIER_MESSAGE_BYTES.get(self.ns.get("sku", "Standard"), 256 * 1024)
        else:
            link.snd_settle_mode = link.remote_snd_settle_mode
            self.consumers.append(link)
        link.open()

    def on_link_remote_close(self, event: Any) -> None:
        self.forget(event.link)
        if not event.link.state & Endpoint.LOCAL_CLOSED:
            event.link.close()

    def on_session_remote_close(self, event: Any) -> None:
        if not event.session.state & Endpoint.LOCAL_CLOSED:
            event.session.close()

    def on_connection_remote_close(self, event: Any) -> None:
        self.forget_connection(event.connection)
        if not event.connection.state & Endpoint.LOCAL_CLOSED:
            event.connection.close()

    def on_transport_closed(self, event: Any) -> None:
        if event.connection is not None:
            self.forget_connection(event.connection)

    def forget_connection(self, connection: Any) -> None:
        for key in [k for k in self.cbs_replies if k[0] is connection]:
            del self.cbs_replies[key]
        for token_key in [k for k in self.tokens if k[0] is connection]:  # tokens are anchored on their connection
            del self.tokens[token_key]
        self.entity_links = [link for link in self.entity_links if link.connection is not connection]
        for link in [c for c in self.consumers if c.connection is connection]:
            self.forget(link)

    def forget(self, link: Link) -> None:
        """A consumer went away: its locked messages become available again."""
        if link in self.consumers:
            self.consumers.remove(link)
        for tag, (q, stored, owner) in list(self.locked.items()):
            if owner is link:
                del self.locked[tag]
                q.messages.appendleft(stored)
                self.dirty = True

    # --- deliveries -------------------------------------------------------------------

    def on_delivery(self, event: Any) -> None:
        dlv = event.delivery
        link = event.link
        if link.is_receiver:
            if dlv.readable and not dlv.partial:
                raw = bytes(link.recv(dlv.pending) or b"")
                link.advance()
                self.received(link, dlv, raw)
        elif dlv.updated:
            self.settled_by_client(dlv)
        super().on_delivery(event)

    def received(self, link: Link, dlv: Delivery, raw: bytes) -> None:
        address = link.remote_target.address or ""
        if address.endswith("$cbs") or address.endswith("$management"):
            self.management(link, dlv, raw, address.rsplit("/", 1)[-1])
            return
        self.control()
        self.stats["transfers"] += 1
        self.dirty = True
        q = self.queue(address)
        if q is None:
            self.settle(dlv, Delivery.REJECTED, error("amqp:not-found", "The messaging entity could not be found."))
            return
        if "busy_after" in self.faults:  # accept that many more transfers, then throttle every one
            if self.faults["busy_after"] <= 0:
                self.faults["server_busy"] = 1
            self.faults["busy_after"] -= 1
        if self.take_fault("server_busy"):
            self.stats["server_busy"] += 1
            self.settle(dlv, Delivery.REJECTED, error("com.microsoft:server-busy",
                                                          "The request was terminated because the entity is being throttled. Error code : 50009."))
            return
        limit = model.TIER_MESSAGE_BYTES.get(self.ns.get("sku", "Standard"), 256 * 1024)
        if len(raw) > limit:
            self.stats["too_large"] += 1
            self.settle(dlv, Delivery.REJECTED, error("amqp:link:message-size-exceeded", f"The message size {len(raw)} exceeds the limit {limit}."))
            return
        if self.take_fault("drop_unstored"):
            self.drop(link)
            return
        self.store(q, unpack(raw))
        if self.take_fault("drop"):
            self.drop(link)
            return
        self.settle(dlv, Delivery.ACCEPTED)
        self.pump()

    def drop(self, link: Link) -> None:
        self.stats["drops"] += 1
        connection = link.connection
        connection.condition = error("amqp:connection:forced", "The connection was closed by the test peer (fault switch).")
        connection.close()

    def settle(self, dlv: Delivery, outcome: int, condition: Condition | None = None) -> None:
        if condition is not None:
            dlv.local.condition = condition
            self.stats["rejected"] += 1
        dlv.update(outcome)
        dlv.settle()

    def store(self, q: QueueData, messages: list[bytes]) -> None:
        props = self.properties(q)
        detect = bool(props.get("requiresDuplicateDetection"))
        window = model.seconds(props.get("duplicateDetectionHistoryTimeWindow") or "PT10M")
        now = time.time()
        for raw in messages:
            if detect:
                message = Message()
                message.decode(raw)
                mid = str(message.id) if message.id is not None else None
                if mid is not None:
                    first = q.seen.get(mid)
                    if first is not None and now - first < window:
                        q.duplicates += 1
                        continue
                    q.seen[mid] = now
            q.sequence += 1
            q.accepted += 1
            q.messages.append(Stored(raw, q.sequence, int(now * 1000)))
        self.dirty = True

    def management(self, link: Link, dlv: Delivery, raw: bytes, node: str) -> None:
        request = Message()
        request.decode(raw)
        self.settle(dlv, Delivery.ACCEPTED)
        reply = self.cbs_replies.get((link.connection, node))
        if reply is None:
            return
        props: dict[Any, Any] = request.properties or {}
        if node == "$cbs":
            code, description = self.put_token(link.connection, props, request.body)
            answer = Message(correlation_id=request.id, properties={"status-code": code, "status-description": description})
        else:
            answer = Message(correlation_id=request.id, properties={"statusCode": 501, "statusDescription": f"{props.get('operation')} is not implemented by the test peer"})
        reply.send(answer)

    def settled_by_client(self, dlv: Delivery) -> None:
        entry = self.locked.pop(getattr(dlv, "raw_tag", b""), None)  # proton decodes tags as UTF-8: keep our own
        state = dlv.remote_state
        if entry is not None:
            q, stored, _ = entry
            if state == Delivery.REJECTED:
                q.dead.append(stored)
            elif state != Delivery.ACCEPTED:
                q.messages.appendleft(stored)
            self.dirty = True
        dlv.update(state)
        dlv.settle()
        self.pump()

    def on_link_flow(self, event: Any) -> None:
        if event.link.is_sender:
            self.pump()
        else:
            super().on_link_flow(event)

    def pump(self) -> None:
        for link in list(self.consumers):
            q = self.queue(link.remote_source.address or "")
            if q is None:
                continue
            while link.credit > 0 and q.messages:
                stored = q.messages.popleft()
                stored.deliveries += 1
                token = uuid.uuid4()
                tag = token.bytes_le
                now_ms = int(time.time() * 1000)
                body = annotate(stored.raw, {"x-opt-sequence-number": stored.sequence, "x-opt-enqueued-time": timestamp(stored.enqueued_ms),
                                             "x-opt-locked-until": timestamp(now_ms + int(LOCK_SECONDS * 1000))})
                dlv = link.delivery(tag)  # type: ignore[arg-type]
                dlv.raw_tag = tag
                link.send(body)
                link.advance()
                if link.snd_settle_mode == Link.SND_SETTLED:
                    dlv.settle()
                else:
                    self.locked[tag] = (q, stored, link)
                self.dirty = True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--dir", type=Path, required=True, help="directory with model.json (from the ARM peer), control.json, stats.json")
    parser.add_argument("--tls", metavar="HOST:PORT", help="also serve AMQPS there (needs --cert and --key)")
    parser.add_argument("--cert", type=Path, help="server certificate chain (PEM)")
    parser.add_argument("--key", type=Path, help="its private key (PEM)")
    parser.add_argument("--jwt-key-file", type=Path, help="the key Entra tokens are signed with (HS256); without it jwt tokens are refused")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    tls = None
    if args.tls:
        if not (args.cert and args.key):
            parser.error("--tls needs --cert and --key")
        host, _, port = args.tls.rpartition(":")
        domain = SSLDomain(SSLDomain.MODE_SERVER)
        domain.set_credentials(str(args.cert), str(args.key), None)
        tls = (host, int(port), domain)
    jwt_key = args.jwt_key_file.read_bytes().strip() if args.jwt_key_file else None
    Container(Broker(args.port, args.namespace, args.dir, tls, jwt_key)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
