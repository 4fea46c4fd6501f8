"""asb-queues run: every change into its stream's queue, in order, acknowledged only once accepted.

The main thread reads stdin and routes each change to its stream's worker. A
worker owns one ServiceBusClient and one sender (opening one costs ~0.5 s, so it
is reused), packs what is waiting into ServiceBusMessageBatches up to the size
limit, sends them one after the other (per-queue order), and writes a checkpoint
for the stream once Service Bus accepted a batch: it then holds every earlier
change of that stream too. Different queues send concurrently.

Refusals that pass (ServerBusy, lost connection, timeouts) are retried with
backoff for up to `send_timeout` seconds, resending the same batch: its message
ids are deterministic, so duplicate detection drops what had already arrived.
Nothing is ever skipped: a change that cannot be delivered stops the run, and
its stream's checkpoint stays before it.
"""

from __future__ import annotations

import queue as queues
import threading
import time
from collections.abc import Callable
from typing import Any

from providers import helper as h
from providers import protocol as p
from providers.asb_queues import messages, settings, transport
from providers.asb_queues.errors import first_line, scrub
from providers.asb_queues.management import QueueApi, connect
from providers.asb_queues.queue_admin import in_state, recorded_tier, resource

INBOX = 20_000  # changes waiting per queue before the reader blocks
DRAIN = 5_000  # changes taken from the inbox per round
SEND_TIMEOUT = 60  # seconds for one send call (the SDK hangs against a broken peer otherwise)
STOP = object()
# The SDK sizes a batch without the outer message's envelope: a batch it fills to exactly
# the link's 262144 bytes goes out as 262165 and is refused. Leave room for that.
BATCH_HEADROOM = 1024


class Fatal(Exception):
    pass


class Acker:
    """Writes checkpoint (and resource) lines; workers share stdout through it."""

    def __init__(self, writer: h.Writer):
        self.writer = writer
        self.lock = threading.Lock()

    def ack(self, stream: str, position: Any) -> None:
        with self.lock:
            self.writer.send(p.checkpoint_message(stream, position))

    def send(self, message: dict[str, Any]) -> None:
        with self.lock:
            self.writer.send(message)


class Marker:
    """A position-only line: acknowledged once everything before it in the stream was accepted."""

    __slots__ = ("position",)

    def __init__(self, position: Any):
        self.position = position


class Worker(threading.Thread):
    def __init__(self, stream: str, queue_name: str, connect: Callable[[], Any], limit: int, acker: Acker, timeout: float, log: Callable[[str], None]):
        super().__init__(name=f"asb-{queue_name}", daemon=True)
        self.stream, self.queue_name = stream, queue_name
        self.connect, self.limit, self.acker, self.timeout, self.log = connect, limit, acker, timeout, log
        self.inbox: queues.Queue[Any] = queues.Queue(maxsize=INBOX)
        self.failure: h.CommandFailed | None = None
        self.client: Any = None
        self.sender: Any = None
        self.batch: Any = None
        self.position: Any = None  # newest position whose change (and all before it) will be in the current batch
        self.sent = 0

    def put(self, item: Any) -> None:
        while self.is_alive():
            try:
                self.inbox.put(item, timeout=0.2)
                return
            except queues.Full:
                continue

    def run(self) -> None:
        try:
            self.loop()
        except Fatal as exc:
            self.failure = h.CommandFailed(str(exc))
        except h.CommandFailed as exc:
            self.failure = exc
        except Exception as exc:  # noqa: BLE001 - reported, never swallowed
            what = f"queue {self.queue_name}"
            self.failure = (transport.certificate_failure(exc, what) or transport.credential_failure(exc, what)
                            or h.CommandFailed(f"queue {self.queue_name}: unexpected {type(exc).__name__}: {scrub(str(exc))}"))
        finally:
            self.close()

    def loop(self) -> None:
        while True:
            items = [self.inbox.get()]
            try:
                while len(items) < DRAIN:
                    items.append(self.inbox.get_nowait())
            except queues.Empty:
                pass
            for item in items:
                if item is STOP:
                    self.flush()
                    return
                if isinstance(item, Marker):
                    self.position = item.position
                else:
                    self.add(item)
            self.flush()

    # --- batching ------------------------------------------------------------------------

    def add(self, change: messages.Change) -> None:
        from azure.servicebus import ServiceBusMessage
        from azure.servicebus.exceptions import MessageSizeExceededError

        message = ServiceBusMessage(change.body, message_id=change.message_id, content_type="application/json",
                                    application_properties=dict(change.properties), session_id=change.session_id)
        batch = self.current_batch()
        try:
            batch.add_message(message)
        except MessageSizeExceededError:
            self.flush()  # what came before is sent and acknowledged either way
            if len(batch) == 0:
                raise self.oversized(change) from None
            try:
                self.current_batch().add_message(message)
            except MessageSizeExceededError:
                raise self.oversized(change) from None
        if change.position is not None:
            self.position = change.position

    def oversized(self, change: messages.Change) -> Fatal:
        return Fatal(f"the change of table {change.properties.get('table', change.stream)} at position {p.position_key(change.position)} "
                     f"(input line {change.lineno}) is {len(change.body)} bytes, more than one Service Bus message can hold "
                     f"({self.limit} bytes per batch on this tier); it was not sent and not truncated")

    def current_batch(self) -> Any:
        if self.batch is None:
            sender = self.open()
            try:
                self.batch = sender.create_message_batch(max_size_in_bytes=self.limit)
            except ValueError:  # the link allows less than the configured limit
                self.batch = sender.create_message_batch()
        return self.batch

    def flush(self) -> None:
        if self.batch is not None and len(self.batch) > 0:
            self.send(self.batch)
            self.sent += len(self.batch)
            self.batch = None
        if self.position is not None:
            self.acker.ack(self.stream, self.position)
            self.position = None

    # --- sending -------------------------------------------------------------------------

    def open(self) -> Any:
        if self.sender is None:
            if self.client is None:
                self.client = self.connect()
            self.sender = self.client.get_queue_sender(self.queue_name)
        return self.sender

    def send(self, batch: Any) -> None:
        from azure.servicebus import exceptions as e

        started = time.monotonic()
        delay = 0.25
        attempt = 0
        while True:
            attempt += 1
            try:
                self.open().send_messages(batch, timeout=SEND_TIMEOUT)
                if attempt > 1:
                    self.log(f"queue {self.queue_name}: batch of {len(batch)} accepted on attempt {attempt}")
                return
            except e.MessagingEntityNotFoundError:
                raise Fatal(f"queue {self.queue_name} (stream {self.stream}) does not exist in the namespace: run dstream plan, then dstream init") from None
            except (e.ServiceBusAuthenticationError, e.ServiceBusAuthorizationError) as exc:
                raise Fatal(f"Service Bus refused the credentials for queue {self.queue_name}: {scrub(first_line(exc))}") from None
            except e.MessageSizeExceededError as exc:
                raise Fatal(f"Service Bus refused a batch of {len(batch)} messages for queue {self.queue_name} as too large: {scrub(first_line(exc))}") from None
            except (e.ServiceBusError, TimeoutError, OSError) as exc:
                untrusted = transport.certificate_failure(exc, f"queue {self.queue_name}")
                if untrusted is not None:
                    raise untrusted from None
                reason = scrub(first_line(exc))
                if time.monotonic() - started > self.timeout:
                    raise Fatal(f"queue {self.queue_name}: Service Bus did not accept a batch within {self.timeout:g}s ({attempt} attempts): {reason}") from None
                self.log(f"queue {self.queue_name}: send refused ({type(exc).__name__}: {reason}); retrying in {delay:.2f}s")
                if not isinstance(exc, e.ServiceBusServerBusyError):
                    self.reconnect()
                time.sleep(delay)
                delay = min(delay * 2, 15.0)

    def reconnect(self) -> None:
        sender, self.sender = self.sender, None
        if sender is not None:
            try:
                sender.close()
            except Exception:  # noqa: BLE001 - a broken sender may fail to close
                pass

    def close(self) -> None:
        self.reconnect()
        client, self.client = self.client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass


def connector(config: dict[str, Any]) -> Callable[[], Any]:
    """A factory of ServiceBusClients (one per worker thread: the sync clients are not thread-safe)."""
    def connect() -> Any:
        from azure.servicebus import ServiceBusClient

        options: dict[str, Any] = {"retry_total": 3, "retry_backoff_factor": 0.5, "retry_backoff_max": 10, "retry_mode": "exponential",
                                   **transport.client_options()}  # AMQPS trusts only certifi unless told: REQUESTS_CA_BUNDLE / SSL_CERT_FILE
        text = settings.send_connection_string(config)
        if text:
            key = "send_connection_string" if config.get("send_connection_string") else "connection_string"
            try:
                return ServiceBusClient.from_connection_string(text, **options)
            except ValueError:
                raise h.CommandFailed(f"{key} is not a valid Service Bus connection string", key=key) from None
        from azure.identity import DefaultAzureCredential

        return ServiceBusClient(settings.data_plane_host(config), DefaultAzureCredential(), **options)

    return connect


class Delivery:
    def __init__(self, ctx: h.Context):
        self.ctx = ctx
        self.config = ctx.config
        known = in_state(ctx)
        self.queues = {settings.fold(key[1]): str(attrs["queue"]) for key, attrs in known.items()}  # by folded stream name
        self.tier = recorded_tier(known)
        self.streams = {str(s.get("name")): s for s in ctx.envelope.streams}
        if not self.queues and ctx.envelope.streams and not ctx.envelope.resources:  # standalone use without dstream's state
            self.queues = {settings.fold(s): q for s, q in settings.queue_names(self.config, list(ctx.envelope.streams)).items()}
        self.mode = settings.session_mode(self.config)
        tier_limit = settings.TIER_BATCH_BYTES[self.tier]
        wanted = int(self.config["max_batch_bytes"] or 0)
        if wanted < 0:
            raise h.CommandFailed("max_batch_bytes must be positive", key="max_batch_bytes")
        self.limit = min(wanted, tier_limit - BATCH_HEADROOM) if wanted else tier_limit - BATCH_HEADROOM
        self.acker = Acker(ctx.writer)
        self.connect = connector(self.config)
        self.workers: dict[str, Worker] = {}
        self.mgmt: QueueApi | None = None
        self.live: dict[str, dict[str, Any]] | None = None

    def keys(self, stream: str) -> list[str] | None:
        configured = (self.config.get("primary_keys") or {}).get(stream)
        reported = self.streams.get(stream, {}).get("primary_key")
        value = configured if configured is not None else reported
        return [str(k) for k in value] if isinstance(value, list) else ([str(value)] if isinstance(value, str) else None)

    def worker(self, stream: str) -> Worker:
        worker = self.workers.get(stream)
        if worker is None:
            worker = Worker(stream, self.queues[settings.fold(stream)], self.connect, self.limit, self.acker, float(self.config["send_timeout"]), self.ctx.log)
            worker.start()
            self.workers[stream] = worker
        return worker

    def failure(self) -> h.CommandFailed | None:
        for worker in self.workers.values():
            if worker.failure is not None:
                return worker.failure
        return None

    def take(self, lineno: int, raw: bytes) -> None:
        line = p.parse_data_line(raw, lineno)
        stream, position, envelope = line.stream, line.position, line.envelope
        if stream is None:
            return
        if envelope is None:  # position-only
            if position is None:
                return
            worker = self.workers.get(stream)
            if worker is not None:
                worker.put(Marker(position))
            else:  # nothing of this stream is in flight
                self.acker.ack(stream, position)
            return
        if settings.fold(stream) not in self.queues:
            self.create_on_demand(stream, envelope, lineno)
        change = messages.build(raw, lineno, stream, position, envelope, self.mode, self.keys(stream) if self.mode == "primary_key" else None)
        self.worker(stream).put(change)

    def create_on_demand(self, stream: str, envelope: dict[str, Any], lineno: int) -> None:
        if not self.config["create_queues_on_demand"]:
            raise h.CommandFailed(f"no queue for stream {stream!r} (input line {lineno})",
                                    hint="run dstream plan and dstream init, or set create_queues_on_demand = true")
        metadata = envelope.get("metadata") or {}
        info = self.streams.get(stream) or {"name": stream, "table": metadata.get("TableName") or stream, "schema": metadata.get("Schema") or ""}
        name = settings.queue_name(self.config["queue_name"], info)
        taken = {settings.fold(q): q for q in self.queues.values()}
        if settings.fold(name) in taken:
            raise h.CommandFailed(f"stream {stream!r} would share queue {taken[settings.fold(name)]!r} with another stream (queue names are case-insensitive)",
                                    key="queue_name")
        if self.mgmt is None:
            self.mgmt = connect(self.config)
            self.tier = self.mgmt.tier()
            self.live = self.mgmt.queues()
        attrs = settings.attributes(self.config, name, self.tier)
        existing = (self.live or {}).get(settings.fold(name))
        if existing is not None and not self.config["adopt_existing"]:
            raise h.CommandFailed(f"queue {name} exists but is not managed by this task (stream {stream!r}, input line {lineno})",
                                    hint="set adopt_existing = true to take it over", key="adopt_existing")
        if existing is not None:
            attrs, arm = settings.from_arm(existing, self.tier, name), self.mgmt.resource_id(name)  # the configured spelling, not the listed one
        else:
            created = self.mgmt.put(name, attrs)
            attrs, arm = settings.from_arm(created, self.tier, name), created.get("id") or self.mgmt.resource_id(name)
        self.acker.send(p.resource_message("created", resource(arm, (settings.RESOURCE, stream), attrs)))
        self.ctx.log(f"created queue {name} on demand for stream {stream}")
        self.queues[settings.fold(stream)] = name

    def finish(self) -> None:
        """Every worker sends what it holds and acknowledges it; then the first failure, if any, is raised."""
        for worker in self.workers.values():
            worker.put(STOP)
        for worker in self.workers.values():
            worker.join()
        if self.mgmt is not None:
            self.mgmt.close()
        failure = self.failure()
        if failure is not None:
            raise failure


def run(ctx: h.Context) -> None:
    delivery = Delivery(ctx)
    reader = h.LineReader(0, first_lineno=2, prefix=ctx.stdin_rest)
    try:
        for batch in reader.batches():
            for lineno, raw in batch:
                delivery.take(lineno, raw)
            failure = delivery.failure()
            if failure is not None:
                raise failure
    except (h.CommandFailed, p.ProtocolError):
        try:
            delivery.finish()  # acknowledge what was accepted before the problem
        except h.CommandFailed:
            pass  # the first problem is the one reported
        raise
    delivery.finish()
