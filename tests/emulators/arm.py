"""An Azure Resource Manager stand-in for Microsoft.ServiceBus namespaces and queues (HTTPS).

Run as a process:
  python tests/emulators/arm.py --port P --dir DIR --cert CERT.pem --key KEY.pem --token T \
      --namespace sub/rg/ns1=Standard [--namespace ...] [--page-size 100]

- HTTPS (the caller makes a trustme CA; azure-core refuses bearer tokens over http);
  every request needs `Authorization: Bearer T` (401 otherwise).
- Namespaces: GET (with sku), seeded from the command line; PUT creates one.
- Queues: PUT (create or update, always 200), GET, DELETE (200, 204 when absent),
  GET list paged with nextLink ($skiptoken), page size --page-size.
- Queue names are case-insensitive: PUT, GET and DELETE find a queue whatever
  the casing of the URL, and PUT and GET echo the URL's casing in `name` and `id`;
  the list answers every name (and id) lower-cased, as Resource Manager does
  (azure-rest-api-specs, specification/servicebus/resource-manager/Microsoft.ServiceBus/
  stable/2021-11-01/examples/Queues/: SBQueueCreate.json and SBQueueGet.json show
  `sdk-Queues-5647`, SBQueueListByNameSpace.json lists it as `sdk-queues-5647`).
  `--list-case preserve` lists the casing of the first PUT instead.
- ARM's rules: name rules (400), immutable properties (requiresSession,
  requiresDuplicateDetection, enablePartitioning: 400 code 40000), Basic-tier
  restrictions (400), value ranges; durations normalised the way Azure does
  ("PT3600S" comes back as "PT1H"), unset TTL as "P10675199DT2H48M5.4775807S".
- With `--namespace-api NS=PORT --amqp-backend P --sas-key NAME:KEY:RIGHTS`, the same
  process also serves namespace NS's own management API (ATOM over HTTPS) on PORT,
  sharing PORT with AMQP (forwarded to the AMQP peer on P): see servicebus_admin.py.
  Both APIs change one model under one lock. `--namespace-api-tls HOST:PORT` serves
  it over TLS on HOST:PORT too, and `--jwt-key-file F` lets it accept Entra JWTs
  signed with F's key (checked as the AMQP peer checks them).
- The model is written to DIR/model.json after every change; the AMQP peer reads
  it. Message counts in queue GETs come from the AMQP peer's DIR/stats.json.
- Test hooks (no auth needed, never used by the product):
  GET  /_peer/stats              {"requests": n, "by_kind": {...}, "log": ["PUT Orders_cdc_events", ...],
                                  "namespace_api": {"total": n, "GET namespaceinfo": 1, "GET queues": pages, ...}}
                                 (log: queue PUTs and DELETEs with the URL's queue name, through either API)
  POST /_peer/reset              zero the counters, empty the log
  POST /_peer/faults {"throttle": N, "retry_after": S, "max_queues": Q, "fail_status": [..]}
       throttle: the next N ARM requests get 429 + Retry-After: S;
       max_queues: creating a queue beyond Q queues in a namespace → 400 QuotaExceeded.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import servicebus_model as model  # noqa: E402

API_VERSION = "2026-01-01"
INFINITE = "P10675199DT2H48M5.4775807S"
INFINITE_SECONDS = 10675199 * 86400.0
NS_PATH = re.compile(r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.ServiceBus/namespaces/([^/]+)(/queues(?:/([^/]+))?)?/?$", re.I)
QUEUE_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,258}[A-Za-z0-9])?$")
IMMUTABLE = ("requiresSession", "requiresDuplicateDetection", "enablePartitioning")
DURATIONS = ("lockDuration", "defaultMessageTimeToLive", "duplicateDetectionHistoryTimeWindow", "autoDeleteOnIdle")
SIZES = (1024, 2048, 3072, 4096, 5120)


class ArmError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def iso(seconds: float) -> str:
    """Azure's normalised form: P{d}DT{h}H{m}M{s}S without zero parts; huge = infinite."""
    if seconds >= INFINITE_SECONDS - 1:
        return INFINITE
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = "P" + (f"{int(days)}D" if days else "")
    clock = (f"{int(hours)}H" if hours else "") + (f"{int(minutes)}M" if minutes else "") + (f"{secs:g}S" if secs else "")
    return text + ("T" + clock if clock else "") if (days or clock) else "PT0S"


class Store:
    """Namespaces and queues, persisted to model.json for the AMQP peer."""

    def __init__(self, directory: Path, page_size: int, list_case: str = "lower"):
        self.path = directory / "model.json"
        self.stats_path = directory / "stats.json"
        self.page_size = page_size
        self.list_case = list_case
        self.lock = threading.Lock()
        self.model = model.load(self.path)
        self.model.setdefault("namespaces", {})
        self.scopes: dict[str, tuple[str, str]] = {}  # namespace -> (subscription, resource group)
        self.requests: collections.Counter[str] = collections.Counter()
        self.log: list[str] = []  # queue writes and deletes, as "METHOD name"
        self.faults: dict[str, Any] = {}

    def listed(self, name: str) -> str:
        return name.lower() if self.list_case == "lower" else name

    def save(self) -> None:
        model.save(self.path, self.model)

    def namespace(self, sub: str, rg: str, ns: str) -> dict[str, Any]:
        scope = self.scopes.get(ns.lower())
        found = self.model["namespaces"].get(ns.lower())
        if found is None or scope is None or (scope[0].lower(), scope[1].lower()) != (sub.lower(), rg.lower()):
            raise ArmError(404, "ResourceNotFound", f"The Resource 'Microsoft.ServiceBus/namespaces/{ns}' under resource group '{rg}' was not found.")
        return dict(found)

    def counts(self, queue: str) -> dict[str, int]:
        stats = model.load(self.stats_path).get("queues", {}).get(queue, {})
        return {"activeMessageCount": int(stats.get("active", 0)), "deadLetterMessageCount": int(stats.get("dead_letter", 0)),
                "scheduledMessageCount": 0, "transferMessageCount": 0, "transferDeadLetterMessageCount": 0}


def queue_json(sub: str, rg: str, ns: str, name: str, props: dict[str, Any], ns_obj: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    full = {k: v for k, v in props.items() if k != model.INCARNATION}
    full["countDetails"] = counts
    full["messageCount"] = counts["activeMessageCount"] + counts["deadLetterMessageCount"]
    full["sizeInBytes"] = 0
    return {"id": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ServiceBus/namespaces/{ns}/queues/{name}",
            "name": name, "type": "Microsoft.ServiceBus/Namespaces/Queues", "location": ns_obj.get("location", "westeurope"), "properties": full}


def defaults(tier: str) -> dict[str, Any]:
    return {"lockDuration": "PT1M", "maxSizeInMegabytes": 1024, "requiresDuplicateDetection": False, "requiresSession": False,
            "defaultMessageTimeToLive": "P14D" if tier == "Basic" else INFINITE, "deadLetteringOnMessageExpiration": False,
            "duplicateDetectionHistoryTimeWindow": "PT10M", "maxDeliveryCount": 10, "status": "Active", "enableBatchedOperations": True,
            "autoDeleteOnIdle": INFINITE, "enablePartitioning": False, "enableExpress": False, "maxMessageSizeInKilobytes": 256 if tier != "Premium" else 1024}


def validate(name: str, body: Any, tier: str, existing: dict[str, Any] | None) -> dict[str, Any]:
    if not QUEUE_NAME.match(name):
        raise ArmError(400, "BadRequest", f"The entity name '{name}' is invalid: 1-260 letters, digits, periods, hyphens and underscores, "
                                          "starting and ending with a letter or digit.")
    if not isinstance(body, dict) or not isinstance(body.get("properties", {}), dict):
        raise ArmError(400, "BadRequest", "The request body must be a JSON object with 'properties'.")
    given = dict(body.get("properties") or {})
    props = defaults(tier)
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    for key, value in given.items():
        if key in ("countDetails", "messageCount", "sizeInBytes", "createdAt", "updatedAt", "accessedAt"):
            continue  # read-only: ignored as ARM does
        if key not in props and key not in ("forwardTo", "forwardDeadLetteredMessagesTo", "userMetadata"):
            raise ArmError(400, "BadRequest", f"Unknown queue property '{key}'.")
        if key in DURATIONS:
            try:
                value = iso(model.seconds(str(value)))
            except ValueError:
                raise ArmError(400, "BadRequest", f"The value '{value}' of {key} is not a valid ISO 8601 duration.") from None
        props[key] = value
    secs = {k: model.seconds(props[k]) for k in DURATIONS}
    if not 5 <= secs["lockDuration"] <= 300:
        raise ArmError(400, "BadRequest", "lockDuration must be between PT5S and PT5M. 40000")
    if not 20 <= secs["duplicateDetectionHistoryTimeWindow"] <= 7 * 86400:
        raise ArmError(400, "BadRequest", "duplicateDetectionHistoryTimeWindow must be between PT20S and P7D. 40000")
    if not isinstance(props["maxDeliveryCount"], int) or props["maxDeliveryCount"] < 1:
        raise ArmError(400, "BadRequest", "maxDeliveryCount must be at least 1. 40000")
    if tier != "Premium" and props["maxSizeInMegabytes"] not in SIZES:
        raise ArmError(400, "BadRequest", f"maxSizeInMegabytes must be one of {', '.join(map(str, SIZES))}. 40000")
    if tier == "Basic":
        for key, label in (("requiresDuplicateDetection", "duplicate detection"), ("requiresSession", "sessions")):
            if props[key]:
                raise ArmError(400, "BadRequest", f"SubCode=40000. The property '{key}' ({label}) is not supported in the Basic tier.")
        if given.get("defaultMessageTimeToLive") is not None and secs["defaultMessageTimeToLive"] != model.seconds("P14D"):
            raise ArmError(400, "BadRequest", "SubCode=40000. Setting defaultMessageTimeToLive is not supported in the Basic tier.")
        if secs["autoDeleteOnIdle"] < INFINITE_SECONDS - 1 or props.get("forwardTo"):
            raise ArmError(400, "BadRequest", "SubCode=40000. autoDeleteOnIdle and forwardTo are not supported in the Basic tier.")
    if existing is not None:
        for key in IMMUTABLE:
            if bool(existing.get(key)) != bool(props[key]):
                raise ArmError(400, "BadRequest", f"SubCode=40000. The value for the {key} property of an existing Queue cannot be changed.")
        props["createdAt"] = existing.get("createdAt", now)
        props[model.INCARNATION] = existing.get(model.INCARNATION) or uuid.uuid4().hex
    else:
        props["createdAt"] = now
        props[model.INCARNATION] = uuid.uuid4().hex  # a queue deleted and made again is a new, empty queue
    props["updatedAt"] = now
    return props


class Handler(BaseHTTPRequestHandler):
    server_version = "arm-peer/1.0"
    protocol_version = "HTTP/1.1"
    store: Store
    token: str
    namespace_api: Any = None

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def reply(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", f"peer-{time.monotonic_ns()}")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be deserialized.") from None

    def do_GET(self) -> None:
        self.handle_any("GET")

    def do_PUT(self) -> None:
        self.handle_any("PUT")

    def do_DELETE(self) -> None:
        self.handle_any("DELETE")

    def do_POST(self) -> None:
        self.handle_any("POST")

    def handle_any(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        try:
            if url.path.startswith("/_peer/"):
                self.peer_hook(method, url.path)
                return
            store = self.store
            with store.lock:
                store.requests["total"] += 1
                throttle = int(store.faults.get("throttle", 0))
                if throttle > 0:
                    store.faults["throttle"] = throttle - 1
                    store.requests["throttled"] += 1
            if throttle > 0:
                self.body()
                self.reply(429, {"error": {"code": "TooManyRequests", "message": "The request is being throttled."}},
                           {"Retry-After": str(self.store.faults.get("retry_after", 1))})
                return
            if self.headers.get("Authorization") != f"Bearer {self.token}":
                self.body()
                raise ArmError(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing or invalid.")
            if query.get("api-version") != API_VERSION:
                raise ArmError(400, "InvalidApiVersionParameter", f"The api-version '{query.get('api-version')}' is invalid. The supported versions are '{API_VERSION}'.")
            match = NS_PATH.match(url.path)
            if not match:
                raise ArmError(404, "InvalidResourceType", f"No route for {method} {url.path}")
            sub, rg, ns, queues, queue = match.groups()
            self.route(method, sub, rg, ns, queues, queue, query)
        except ArmError as exc:
            self.reply(exc.status, {"error": {"code": exc.code, "message": exc.message}})

    def route(self, method: str, sub: str, rg: str, ns: str, queues: str | None, queue: str | None, query: dict[str, str]) -> None:
        store = self.store
        kind = f"{method} {'queue' if queue else 'queues' if queues else 'namespace'}"
        body = self.body() if method in ("PUT", "POST") else None
        with store.lock:
            store.requests[kind] += 1
            if not queues:
                if method == "PUT":
                    sku = ((body or {}).get("sku") or {}).get("name", "Standard")
                    store.model["namespaces"].setdefault(ns.lower(), {"name": ns, "sku": sku, "location": (body or {}).get("location", "westeurope"), "queues": {}})
                    store.scopes[ns.lower()] = (sub, rg)
                    store.save()
                if method not in ("GET", "PUT"):
                    raise ArmError(405, "MethodNotAllowed", f"{method} is not supported on namespaces by the test peer")
                obj = store.namespace(sub, rg, ns)
                self.reply(200, {"id": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ServiceBus/namespaces/{obj['name']}",
                                 "name": obj["name"], "type": "Microsoft.ServiceBus/Namespaces", "location": obj.get("location", "westeurope"),
                                 "sku": {"name": obj["sku"], "tier": obj["sku"]},
                                 "properties": {"provisioningState": "Succeeded", "status": "Active",
                                                "serviceBusEndpoint": f"https://{obj['name']}.servicebus.windows.net:443/"}})
                return
            obj = store.namespace(sub, rg, ns)
            tier = obj["sku"]
            entries = store.model["namespaces"][ns.lower()]["queues"]
            if queue is None:
                if method != "GET":
                    raise ArmError(405, "MethodNotAllowed", f"{method} is not supported on the queue collection")
                names = sorted(entries, key=str.lower)
                start = int(query.get("$skiptoken") or query.get("$skip") or 0)
                size = min(int(query.get("$top") or store.page_size), store.page_size)
                page = names[start:start + size]
                result: dict[str, Any] = {"value": [queue_json(sub, rg, obj["name"], store.listed(n), entries[n], obj, store.counts(n)) for n in page]}
                if start + size < len(names):
                    base = f"https://{self.headers.get('Host')}{urllib.parse.urlsplit(self.path).path}"
                    result["nextLink"] = f"{base}?api-version={API_VERSION}&$skiptoken={start + size}"
                self.reply(200, result)
                return
            found = model.find_queue(obj, queue)
            if method in ("PUT", "DELETE"):
                store.log.append(f"{method} {queue}")
            if method == "GET":
                if found is None:
                    raise ArmError(404, "MessagingEntityNotFound", f"Entity '{ns}:Queue:{queue}' was not found.")
                self.reply(200, queue_json(sub, rg, obj["name"], queue, found[1], obj, store.counts(found[0])))
            elif method == "DELETE":
                if found is None:
                    self.reply(204)
                    return
                del entries[found[0]]
                store.save()
                self.reply(200)
            elif method == "PUT":
                max_queues = store.faults.get("max_queues")
                if found is None and max_queues is not None and len(entries) >= int(max_queues):
                    raise ArmError(400, "QuotaExceeded", f"SubCode=40000. The maximum entity count of {max_queues} for namespace {ns} has been reached.")
                props = validate(queue, body, tier, found[1] if found else None)
                name = found[0] if found else queue
                entries[name] = props
                store.save()
                self.reply(200, queue_json(sub, rg, obj["name"], queue, props, obj, store.counts(name)))
            else:
                raise ArmError(405, "MethodNotAllowed", f"{method} is not supported on queues")

    def peer_hook(self, method: str, path: str) -> None:
        store = self.store
        body = self.body() if method == "POST" else None
        with store.lock:
            if path == "/_peer/stats":
                namespace_api = dict(Handler.namespace_api.requests) if Handler.namespace_api else {}
                self.reply(200, {"requests": store.requests["total"], "by_kind": dict(store.requests), "log": list(store.log),
                                 "namespace_api": namespace_api})
            elif path == "/_peer/reset" and method == "POST":
                store.requests.clear()
                if Handler.namespace_api:
                    Handler.namespace_api.requests.clear()
                store.log.clear()
                self.reply(200, {})
            elif path == "/_peer/faults" and method == "POST":
                store.faults = dict(body or {})
                self.reply(200, store.faults)
            else:
                self.reply(404, {"error": {"code": "NotFound", "message": path}})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--list-case", choices=("lower", "preserve"), default="lower", help="casing of names in queue lists (Azure: lower)")
    parser.add_argument("--namespace", action="append", default=[], help="sub/rg/name=Tier (Basic, Standard, Premium)")
    parser.add_argument("--namespace-api", default=None, help="NS=PORT: serve NS's namespace management API (HTTPS) on PORT")
    parser.add_argument("--amqp-backend", type=int, default=0, help="the AMQP peer's port, for non-TLS connections to the namespace API port")
    parser.add_argument("--sas-key", action="append", default=[], help="NAME:KEY:RIGHTS (Manage,Send,Listen) accepted by the namespace API")
    parser.add_argument("--namespace-api-tls", default=None, help="HOST:PORT: the namespace API over TLS only, as the credential dials it")
    parser.add_argument("--jwt-key-file", type=Path, help="the key Entra JWTs for the namespace API are signed with (HS256)")
    args = parser.parse_args()
    store = Store(args.dir, args.page_size, args.list_case)
    for spec in args.namespace:
        scope, _, tier = spec.partition("=")
        sub, rg, name = scope.split("/")
        store.model["namespaces"].setdefault(name.lower(), {"name": name, "sku": tier or "Standard", "location": "westeurope", "queues": {}})
        store.scopes[name.lower()] = (sub, rg)
    for name, obj in store.model["namespaces"].items():
        store.scopes.setdefault(name, ("", ""))
        obj.setdefault("queues", {})
    store.save()
    Handler.store = store
    Handler.token = args.token
    if args.namespace_api:
        import servicebus_admin

        name, _, port = args.namespace_api.partition("=")
        jwt_key = args.jwt_key_file.read_bytes().strip() if args.jwt_key_file else None
        keys = servicebus_admin.Keys(args.sas_key, args.token, jwt_key)
        Handler.namespace_api = servicebus_admin.NamespaceApi(store, name, keys, validate, ArmError)
        tls_host, _, tls_port = (args.namespace_api_tls or "").rpartition(":")
        servicebus_admin.serve(Handler.namespace_api, int(port), args.amqp_backend, args.cert, args.key,
                               (tls_host, int(tls_port)) if args.namespace_api_tls else None)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"arm peer listening on https://127.0.0.1:{args.port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
