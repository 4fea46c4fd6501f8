"""The Service Bus namespace management API (ATOM over HTTPS), and the front that shares its port with AMQP.

Started by arm.py (`--namespace-api NS=PORT --amqp-backend PORT --sas-key NAME:KEY:RIGHTS`)
so that both management APIs change one in-memory model under one lock, and
a queue created through one is seen by the other (model.json for the AMQP peer).

Why one port for HTTPS and AMQP: `ServiceBusAdministrationClient.from_connection_string`
builds `https://` + the connection string's host *with its port*, even with
`UseDevelopmentEmulator=true`, while the AMQP client speaks plain AMQP to that
same host:port (azure-servicebus 7.15.0, management/_management_client.py).
The front peeks at the first byte of each connection: 0x16 starts a TLS
handshake (served here as HTTPS), anything else ("A" of the AMQP header) is
forwarded byte for byte to the AMQP peer.

What the real service does, and so this peer (evidence: the azure-sdk-for-python
recordings under sdk/servicebus/azure-servicebus/tests/mgmt_tests/recordings/,
and learn.microsoft.com "Service Bus Resource Manager exceptions"):
- `GET /$namespaceinfo` -> an entry with NamespaceInfo (Name, MessagingSKU, NamespaceType...)
  (test_mgmt_namespace_get_properties.yaml).
- `PUT /{queue}` without If-Match creates: 201 with the entry; an existing queue
  gives 409 `SubCode=40900. Conflict...` (test_mgmt_queue_create_duplicate.yaml).
  With `If-Match: *` it updates: 200; a missing queue gives 404
  `SubCode=40400. Not Found. The Operation doesn't exist.`; changing an immutable
  property gives 400 `SubCode=40000. The value for the RequiresSession property of
  an existing Queue cannot be changed.` (test_mgmt_queue_update_invalid.yaml).
- `GET /{queue}`: the entry; a missing queue is **200 with an empty feed** titled
  "Publicly Listed Services" (the SDK turns it into ResourceNotFoundError).
- `DELETE /{queue}`: 200; missing: 404 `No service is hosted at the specified address.`
  (test_mgmt_queue_delete_negtive.yaml).
- `GET /$Resources/queues?$skip=N&$top=M`: a feed of entries with CountDetails
  (test_mgmt_queue_list_basic.yaml); a second `<link rel="next">` is the SDK's
  only sign that more pages follow, given here only when more entries remain.
- Errors are `<Error><Code>N</Code><Detail>...</Detail></Error>` (application/xml).
- Authorization: `SharedAccessSignature sr=..&sig=..&se=..&skn=..`, the signature
  an HMAC-SHA256 with the named key of `quote_plus(sr) + "\\n" + se` (the SDK's
  _pyamqp/utils.generate_sas_token); a wrong signature, an unknown key name or an
  expired token is 401; a key without the Manage right is 401
  `Manage,EntityRead claims required for this operation.` (EntityWrite for PUT,
  EntityDelete for DELETE). A bearer token (Entra) is accepted when it is the
  token the stand-in `az` prints, as Azure Service Bus Data Owner would be, or
  (with --jwt-key-file) a JWT that passes servicebus.check_jwt, the very check
  the AMQP peer makes on put-token (signature, audience https://servicebus.azure.net,
  exp/nbf); any other bearer is 401 with the check's reason as the Detail.
- With --namespace-api-tls HOST:PORT (EntraPeers: 127.x.y.z:443) the API is also
  served over TLS only on HOST:PORT: `ServiceBusAdministrationClient(fqns, credential)`
  dials https://<fully_qualified_namespace> with no port, i.e. 443 (azure-servicebus
  7.15.0, management/_management_client.py `_endpoint = "https://" + fully_qualified_namespace`).
- Names are case-insensitive; the feed lists them lower-cased (the stricter
  choice, as Resource Manager does); GET and PUT echo the URL's casing.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import socket
import socketserver
import ssl
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler
from typing import Any
from xml.sax.saxutils import escape

ATOM = "http://www.w3.org/2005/Atom"
CONNECT = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"
COUNTS = "http://schemas.microsoft.com/netservices/2011/06/servicebus"
# QueueDescription elements in the order the service writes them (DataContract order).
ELEMENTS = ("LockDuration", "MaxSizeInMegabytes", "RequiresDuplicateDetection", "RequiresSession", "DefaultMessageTimeToLive",
            "DeadLetteringOnMessageExpiration", "DuplicateDetectionHistoryTimeWindow", "MaxDeliveryCount", "EnableBatchedOperations",
            "SizeInBytes", "MessageCount", "IsAnonymousAccessible", "AuthorizationRules", "Status", "ForwardTo", "UserMetadata",
            "CreatedAt", "UpdatedAt", "AccessedAt", "SupportOrdering", "CountDetails", "AutoDeleteOnIdle", "EnablePartitioning",
            "EntityAvailabilityStatus", "ForwardDeadLetteredMessagesTo", "EnableExpress", "MaxMessageSizeInKilobytes")
SETTABLE = frozenset({"LockDuration", "MaxSizeInMegabytes", "RequiresDuplicateDetection", "RequiresSession", "DefaultMessageTimeToLive",
                      "DeadLetteringOnMessageExpiration", "DuplicateDetectionHistoryTimeWindow", "MaxDeliveryCount",
                      "EnableBatchedOperations", "Status", "ForwardTo", "UserMetadata", "AutoDeleteOnIdle", "EnablePartitioning",
                      "ForwardDeadLetteredMessagesTo", "EnableExpress", "MaxMessageSizeInKilobytes"})
INTS = frozenset({"MaxSizeInMegabytes", "MaxDeliveryCount", "MaxMessageSizeInKilobytes"})
BOOLS = frozenset({"RequiresDuplicateDetection", "RequiresSession", "DeadLetteringOnMessageExpiration", "EnableBatchedOperations",
                   "EnablePartitioning", "EnableExpress"})
CLAIMS = {"GET": "Manage,EntityRead", "PUT": "Manage,EntityWrite", "DELETE": "Manage,EntityDelete"}


class NsError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def camel(element: str) -> str:
    return element[0].lower() + element[1:]


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_description(raw: bytes) -> dict[str, Any]:
    """The QueueDescription of a PUT body -> ARM-style camelCase properties (read-only elements dropped)."""
    try:
        root = ET.fromstring(raw)
    except ET.ParseError:
        raise NsError(400, "SubCode=40000. The request body is not well-formed XML.") from None
    description = next((e for e in root.iter() if local(e.tag) == "QueueDescription"), None)
    if local(root.tag) != "entry" or description is None:
        raise NsError(400, "SubCode=40000. The request body must be an Atom entry holding a QueueDescription.")
    props: dict[str, Any] = {}
    for child in description:
        name = local(child.tag)
        if name not in SETTABLE:
            continue
        text = (child.text or "").strip()
        if name in INTS:
            try:
                props[camel(name)] = int(text)
            except ValueError:
                raise NsError(400, f"SubCode=40000. The value '{text}' of {name} is not a number.") from None
        elif name in BOOLS:
            props[camel(name)] = text.lower() == "true"
        else:
            props[camel(name)] = text
    return props


def description_xml(props: dict[str, Any], counts: dict[str, int]) -> str:
    values = {"SizeInBytes": 0, "MessageCount": counts["activeMessageCount"] + counts["deadLetterMessageCount"], "IsAnonymousAccessible": False,
              "AuthorizationRules": "", "SupportOrdering": True, "EntityAvailabilityStatus": "Available", "AccessedAt": "0001-01-01T00:00:00Z"}
    parts = []
    for element in ELEMENTS:
        if element == "CountDetails":
            inner = "".join(f"<d2p1:{k[0].upper() + k[1:]}>{v}</d2p1:{k[0].upper() + k[1:]}>" for k, v in counts.items())
            parts.append(f'<CountDetails xmlns:d2p1="{COUNTS}">{inner}</CountDetails>')
            continue
        value = props.get(camel(element), values.get(element))
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else escape(str(value))
        parts.append(f"<{element}>{text}</{element}>")
    return f'<QueueDescription xmlns="{CONNECT}" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">{"".join(parts)}</QueueDescription>'


def entry_xml(base: str, title: str, namespace: str, content: str, published: str = "") -> str:
    url = f"{base}/{urllib.parse.quote(title)}?api-version=2021-05"
    stamp = now()
    return (f'<entry xmlns="{ATOM}"><id>{escape(url)}</id><title type="text">{escape(title)}</title>'
            f"<published>{published or stamp}</published><updated>{stamp}</updated><author><name>{escape(namespace)}</name></author>"
            f'<link rel="self" href="{escape(url)}"/><content type="application/xml">{content}</content></entry>')


def empty_feed() -> str:
    return (f'<feed xmlns="{ATOM}"><title type="text">Publicly Listed Services</title>'
            '<subtitle type="text">This is the list of publicly-listed services currently available.</subtitle>'
            f"<id>uuid:{time.monotonic_ns()}</id><updated>{now()}</updated><generator>Service Bus 1.1</generator></feed>")


class Keys:
    """SAS keys by name with their rights, and the bearer token the stand-in az prints."""

    def __init__(self, specs: list[str], token: str, jwt_key: bytes | None = None):
        self.jwt_key = jwt_key
        self.keys: dict[str, tuple[str, set[str]]] = {}
        for spec in specs:
            name, key, rights = spec.split(":", 2)
            self.keys[name] = (key, {r.strip().lower() for r in rights.split(",") if r.strip()})
        self.token = token

    def rights(self, header: str | None, url: str) -> set[str]:
        """The rights the Authorization header carries for `url`, or NsError 401."""
        if not header:
            raise NsError(401, "MissingToken: The authorization header was not found.")
        if header == f"Bearer {self.token}":
            return {"manage", "send", "listen"}
        if header.startswith("Bearer "):
            return self.entra_rights(header[len("Bearer "):])
        if not header.startswith("SharedAccessSignature "):
            raise NsError(401, "InvalidSignature: The token is not a SharedAccessSignature.")
        fields = dict(urllib.parse.parse_qsl(header[len("SharedAccessSignature "):], keep_blank_values=True))
        name, sr, sig, se = fields.get("skn", ""), fields.get("sr", ""), fields.get("sig", ""), fields.get("se", "")
        if name not in self.keys:
            raise NsError(401, f"InvalidSignature: The token has an invalid signature (unknown key name '{name}').")
        key, rights = self.keys[name]
        expected = base64.b64encode(hmac.new(key.encode(), f"{urllib.parse.quote_plus(sr)}\n{se}".encode(), hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(expected, sig):
            raise NsError(401, "InvalidSignature: The token has an invalid signature.")
        if not se.isdigit() or int(se) < time.time():
            raise NsError(401, "ExpiredToken: The token is expired.")
        if not strip_scheme(url).lower().startswith(strip_scheme(sr).lower().rstrip("/")):
            raise NsError(401, f"InvalidAudience: The token audience '{sr}' does not match the request.")
        return rights


    def entra_rights(self, token: str) -> set[str]:
        """An Entra JWT checked exactly as the AMQP peer checks it; the stand-in identity holds Data Owner."""
        import servicebus  # the AMQP peer's module (proton is installed where the peers run)

        try:
            servicebus.check_jwt(token, self.jwt_key, time.time())
        except servicebus.TokenRefused as exc:
            raise NsError(401, str(exc)) from None
        return {"manage", "send", "listen"}


def strip_scheme(url: str) -> str:
    return url.split("://", 1)[-1]


class NamespaceApi:
    """One namespace's management API over the ARM peer's store (arm.Store), sharing its lock."""

    def __init__(self, store: Any, namespace: str, keys: Keys, validate: Any, arm_error: type[Exception]):
        self.store, self.namespace, self.keys = store, namespace, keys
        self.validate, self.arm_error = validate, arm_error
        self.requests: collections.Counter[str] = collections.Counter()

    def handle(self, method: str, host: str, path: str, headers: Any, body: bytes) -> tuple[int, str, str]:
        """(status, content type, body) for one request."""
        url = urllib.parse.urlsplit(path)
        query = dict(urllib.parse.parse_qsl(url.query))
        entity = urllib.parse.unquote(url.path.lstrip("/"))
        kind = ("GET namespaceinfo" if entity == "$namespaceinfo" else f"{method} queues" if entity.lower() == "$resources/queues"
                else f"{method} queue")
        with self.store.lock:
            self.requests["total"] += 1
            self.requests[kind] += 1
        base = f"https://{host}"
        rights = self.keys.rights(headers.get("Authorization"), base + url.path)
        if "manage" not in rights:
            raise NsError(401, f"{CLAIMS.get(method, 'Manage')} claims required for this operation.")
        with self.store.lock:
            obj = self.store.model["namespaces"].get(self.namespace.lower())
            if obj is None:
                raise NsError(404, f"The namespace '{self.namespace}' does not exist.")
            if entity == "$namespaceinfo" and method == "GET":
                info = (f'<NamespaceInfo xmlns="{CONNECT}" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
                        f"<CreatedTime>2024-01-01T00:00:00Z</CreatedTime><MessagingSKU>{obj['sku']}</MessagingSKU>"
                        f"<ModifiedTime>2024-01-01T00:00:00Z</ModifiedTime><Name>{escape(obj['name'])}</Name>"
                        "<NamespaceType>Messaging</NamespaceType></NamespaceInfo>")
                return 200, "application/atom+xml;type=entry;charset=utf-8", entry_xml(base, obj["name"], obj["name"], info)
            if entity.lower() == "$resources/queues" and method == "GET":
                return 200, "application/atom+xml;type=feed;charset=utf-8", self.feed(base, obj, query)
            if not entity or "/" in entity or entity.startswith("$"):
                raise NsError(404, "SubCode=40400. Not Found. The Operation doesn't exist.")
            return self.queue(method, base, obj, entity, headers, body)

    def feed(self, base: str, obj: dict[str, Any], query: dict[str, str]) -> str:
        entries = obj["queues"]
        names = sorted(entries, key=str.lower)
        skip, top = int(query.get("$skip") or 0), min(int(query.get("$top") or 100), 100)
        page = names[skip:skip + top]
        self_url = f"{base}/$Resources/queues?$skip={skip}&$top={top}&api-version=2021-05"
        links = f'<link rel="self" href="{escape(self_url)}"/>'
        if skip + top < len(names):
            links += f'<link rel="next" href="{escape(f"{base}/$Resources/queues?$skip={skip + top}&$top={top}&api-version=2021-05")}"/>'
        body = "".join(entry_xml(base, n.lower(), obj["name"], description_xml(entries[n], self.store.counts(n)), entries[n].get("createdAt", ""))
                       for n in page)
        return f'<feed xmlns="{ATOM}"><title type="text">Queues</title><id>{escape(self_url)}</id><updated>{now()}</updated>{links}{body}</feed>'

    def queue(self, method: str, base: str, obj: dict[str, Any], name: str, headers: Any, body: bytes) -> tuple[int, str, str]:
        import servicebus_model as model

        entries = obj["queues"]
        found = model.find_queue(obj, name)
        entry_type = "application/atom+xml;type=entry;charset=utf-8"
        if method == "GET":
            if found is None:
                return 200, "application/atom+xml;type=feed;charset=utf-8", empty_feed()
            return 200, entry_type, entry_xml(base, name, obj["name"], description_xml(found[1], self.store.counts(found[0])))
        if method == "DELETE":
            self.store.log.append(f"DELETE {name}")
            if found is None:
                raise NsError(404, "No service is hosted at the specified address.")
            del entries[found[0]]
            self.store.save()
            return 200, "application/xml; charset=utf-8", ""
        if method == "PUT":
            update = headers.get("If-Match") == "*"
            if update and found is None:
                raise NsError(404, "SubCode=40400. Not Found. The Operation doesn't exist.")
            if not update and found is not None:
                raise NsError(409, "SubCode=40900. Conflict. You're requesting an operation that isn't allowed in the resource's current state.")
            max_queues = self.store.faults.get("max_queues")
            if found is None and max_queues is not None and len(entries) >= int(max_queues):
                raise NsError(403, f"SubCode=40300. The maximum entity count of {max_queues} for namespace {obj['name']} has been reached.")
            props = parse_description(body)
            self.store.log.append(f"PUT {name}")
            try:
                stored = self.validate(name, {"properties": props}, obj["sku"], found[1] if found else None)
            except self.arm_error as exc:
                raise NsError(400, str(getattr(exc, "message", exc))) from None
            key = found[0] if found else name
            entries[key] = stored
            self.store.save()
            content = description_xml(stored, self.store.counts(key))
            return (200 if update else 201), entry_type, entry_xml(base, name, obj["name"], content, stored.get("createdAt", ""))
        raise NsError(405, f"The method {method} is not allowed.")


def make_handler(api: NamespaceApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "Microsoft-HTTPAPI/2.0"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def reply(self, status: int, content_type: str, text: str) -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def any(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                self.reply(*api.handle(method, self.headers.get("Host", ""), self.path, self.headers, body))
            except NsError as exc:
                tracking = f"TrackingId:peer-{time.monotonic_ns()}, SystemTracker:{self.headers.get('Host', '')}, Timestamp:{now()}"
                self.reply(exc.status, "application/xml; charset=utf-8",
                           f"<Error><Code>{exc.status}</Code><Detail>{escape(exc.detail)} To know more visit "
                           f"https://aka.ms/sbResourceMgrExceptions. . {tracking}</Detail></Error>")

        def do_GET(self) -> None:
            self.any("GET")

        def do_PUT(self) -> None:
            self.any("PUT")

        def do_DELETE(self) -> None:
            self.any("DELETE")

    return Handler


def copy(source: socket.socket, sink: socket.socket) -> None:
    try:
        while True:
            data = source.recv(262144)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class Front(socketserver.ThreadingTCPServer):
    """One port: TLS (first byte 0x16) is the management API over HTTPS, anything else goes to the AMQP peer."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, amqp_port: int | None, context: ssl.SSLContext, handler: type[BaseHTTPRequestHandler],
                 host: str = "127.0.0.1"):
        super().__init__((host, port), handler)
        self.amqp_port, self.context = amqp_port, context

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            first = request.recv(1, socket.MSG_PEEK)
        except OSError:
            return
        if not first:
            return
        if first == b"\x16":
            try:
                tls = self.context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
            try:
                self.RequestHandlerClass(tls, client_address, self)
            finally:
                try:
                    tls.close()
                except OSError:
                    pass
            return
        if self.amqp_port is None:  # a TLS-only listener (port 443): plain bytes are no handshake, the connection is dropped
            return
        try:
            backend = socket.create_connection(("127.0.0.1", self.amqp_port), timeout=10)
        except OSError:
            return
        backend.settimeout(None)
        for sock in (request, backend):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        back = threading.Thread(target=copy, args=(backend, request), daemon=True)
        back.start()
        copy(request, backend)
        back.join()
        backend.close()


def serve(api: NamespaceApi, port: int, amqp_port: int, cert: str, key: str, tls_only: tuple[str, int] | None = None) -> list[Front]:
    """The shared HTTPS/AMQP port on 127.0.0.1, plus (tls_only) HTTPS alone on HOST:PORT."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    fronts = [Front(port, amqp_port, context, make_handler(api))]
    if tls_only is not None:
        fronts.append(Front(tls_only[1], None, context, make_handler(api), host=tls_only[0]))
    for front in fronts:
        threading.Thread(target=front.serve_forever, name="namespace-api", daemon=True).start()
    return fronts
