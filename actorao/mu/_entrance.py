"""The entrance, as AO's MU is: everything that comes in is built and checked here before the SU
assigns it. Messages from the API, signed ANS-104 items, spawns (from the API, from items and from
processes' results), assignments of existing messages, and modules.

``From`` comes from the signer; only the node itself sets ``From-Process`` and the other pushed tags.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import replace

import orjson

from actorao._config import NodeConfig
from actorao._exceptions import InvalidMessage, ModuleError, UnknownMessage, UnknownProcess
from actorao._future import Future
from actorao.ans104 import DataItem
from actorao.cu import ModuleRegistry
from actorao.cu._drive import add_data
from actorao.message import (
    WEAVEDRIVE_PROTOCOL,
    Message,
    Process,
    Tag,
    TagsLike,
    check_anchor,
    check_data,
    checked_message_tags,
    encode_id,
    is_id,
    module_json,
    new_id,
    normalize_tags,
    parse_compute_limit,
    parse_memory_limit,
    refuse_pushed_tags,
    tag_value,
    with_ao_tags,
)
from actorao.mu._cron import parse_interval
from actorao.persist import ModuleRecord, ShardLogs
from actorao.su import Ack, NewMessage, NewRow, Schedulers, shard_for
from actorao.vm import CompiledModule, Instance

log = logging.getLogger(__name__)

_INSTANTIATES_KEPT = 1024  # (module, limits) outcomes remembered

Tags = tuple[tuple[str, str], ...]


class Entrance:
    """Builds and checks what comes in, and submits it to the SU that ``scheduler`` returns."""

    def __init__(
        self, config: NodeConfig, logs: ShardLogs, identity: str, modules: ModuleRegistry,
        scheduler: Callable[[], Schedulers],
    ) -> None:
        self._config = config
        self._logs = logs
        self.identity = identity
        self._modules = modules
        self._scheduler = scheduler
        # (module, fuel, memory) -> None when it instantiates, else what it fails with. Instantiating
        # runs the module's start function under the process's fuel: it costs as much as a message,
        # and a spawn bomb of one module must pay it once, not once per child, on the messenger's thread.
        self._instantiates: OrderedDict[tuple[str, int, int], ModuleError | None] = OrderedDict()
        self._instantiates_lock = threading.Lock()
        self.instantiations = 0  # modules instantiated to check a spawn, since the node opened

    def _known(self, pid: str) -> Schedulers:
        scheduler = self._scheduler()
        if not scheduler.knows(pid):
            raise UnknownProcess(f"no process {pid} on this node")
        return scheduler

    # -- messages -------------------------------------------------------------------------------
    def checked(self, pid: str, tags: TagsLike, data: str, anchor: str) -> NewMessage:
        """What the caller gave for a new message from the node to ``pid``, checked: the target, the
        tags (normalised by with_ao_tags), the anchor and the data. The shard that owns ``pid`` mints
        its id and builds it."""
        if not is_id(pid):
            raise InvalidMessage("Target", f"expected a 43-character process id, got {pid!r:.60}")
        self._known(pid)
        normalized = checked_message_tags(tags)
        check_anchor(anchor)
        check_data(data, self._config.max_data_bytes)
        return pid, normalized, data, anchor

    def message(self, pid: str, tags: TagsLike, data: str, anchor: str) -> Message:
        """A new message from the node to ``pid``, checked, with an id minted here (for a dry run)."""
        target, normalized, data, anchor = self.checked(pid, tags, data, anchor)
        return Message(new_id(), self.identity, target, normalized, data, anchor)

    def send(self, pid: str, tags: TagsLike, data: str, anchor: str) -> Future[Ack]:
        return self._scheduler().submit_one_new(self.checked(pid, tags, data, anchor))

    def send_many(self, messages: Iterable[tuple[str, TagsLike, str]]) -> Future[list[Ack]]:
        """Every message is checked before any is submitted, so one bad message sends none.

        A batch names few processes and few tag sets, many times over: each target is checked once,
        and, when the batch is a list or tuple (so nothing can change a tag set while it is read),
        each tag set object once."""
        scheduler = self._scheduler()
        max_data_bytes = self._config.max_data_bytes
        by_object = type(messages) in (list, tuple)
        targets: set[str] = set()
        # Each tag set travels once, numbered: rows are built here as the SU's wire has them.
        numbers: dict[int, int] = {}  # id of a tags object (a list or tuple of messages only) -> number
        # id of a checked tag set -> number: checked_message_tags hands out one object per content it
        # remembers, and tag_sets keeps each alive (an unremembered set may travel twice; no harm).
        by_checked: dict[int, int] = {}
        tag_sets: list[tuple[Tag, ...]] = []
        rows: list[NewRow] = []
        for pid, tags, data in messages:
            if type(pid) is not str or pid not in targets:
                if type(pid) is not str or not scheduler.knows(pid):  # a known process's id is well-formed
                    if not is_id(pid):
                        raise InvalidMessage("Target", f"expected a 43-character process id, got {pid!r:.60}")
                    raise UnknownProcess(f"no process {pid} on this node")
                targets.add(pid)
            number = numbers.get(id(tags)) if by_object else None
            if number is None:
                normalized = checked_message_tags(tags)
                number = by_checked.get(id(normalized))
                if number is None:
                    number = by_checked[id(normalized)] = len(tag_sets)
                    tag_sets.append(normalized)
                if by_object:
                    numbers[id(tags)] = number
            if not (type(data) is str and data.isascii() and len(data) <= max_data_bytes):
                check_data(data, max_data_bytes)
            rows.append((pid, number, data, ""))
        return scheduler.submit_new(rows, tag_sets, targets)

    def post(self, message: Message, *, signed: bytes | None = None) -> Future[Ack]:
        """A fully formed message, checked strictly. ``signed`` is the data item it came in as."""
        if not isinstance(message, Message):
            raise InvalidMessage("message", f"expected a Message, got {type(message).__name__}")
        message.validate(self._config.max_data_bytes)
        refuse_pushed_tags(message.tags)
        if message.sender and message.sender != message.owner:
            raise InvalidMessage("From", "a message from outside is from its signer (Owner); only the node "
                                 "pushes messages from processes")
        return self._scheduler().submit(message, signed=signed)

    def assign(self, pid: str, message_id: str) -> Future[Ack]:
        """Assign a message already on this node to one more process, once."""
        scheduler = self._known(pid)
        key = self._logs.assignment_of(str(message_id)) if is_id(str(message_id)) else None
        entry = self._logs.entry_at(key) if key is not None else None
        if entry is None:
            raise UnknownMessage(f"no message {message_id} was assigned on this node")
        doc = orjson.loads(entry)
        sender = doc["From"] if doc["From"] != doc["Owner"] else ""
        message = Message(doc["Id"], doc["Owner"], doc["Target"], normalize_tags(doc["Tags"]), doc["Data"],
                          doc["Anchor"] or "", sender)
        return scheduler.submit_assignment(message, pid)

    def dry_run_body(
        self, pid: str, tags: TagsLike, data: str, owner: str | None, message_id: str | None, anchor: str
    ) -> bytes:
        """The module JSON of a read-only message, stamped with the process's latest timestamp.
        ``owner`` and ``message_id`` are taken as given: nothing is signed or stored."""
        message = self.message(pid, tags, data, anchor)
        for name, value in (("Owner", owner), ("Id", message_id)):
            if value is not None and (not isinstance(value, str) or len(value) > 256):
                raise InvalidMessage(name, f"must be text of at most 256 characters, got {value!r:.60}")
        if owner is not None or message_id is not None:
            message = replace(message, id=message_id or message.id, owner=owner or message.owner)
        return module_json(message, None, timestamp=self._scheduler().head_timestamp(pid))

    # -- spawns ---------------------------------------------------------------------------------
    def spawn(
        self, module: bytes | str, tags: TagsLike, data: str, module_format: str | None, module_tags: TagsLike
    ) -> Future[Ack]:
        record, module_id = self._modules.record(
            module, module_format, normalize_tags(module_tags, "module_tags"), owner=self.identity,
            stored_at=self._now_ms())
        process_id = new_id(self.identity.encode(), module_id.encode())
        return self._submit_spawn(process_id, module_id, record, normalize_tags(tags), data, ())

    def spawn_pushed(self, process_id: str, module_id: str, tags: Tags, data: str, pushed: Tags) -> Future[Ack]:
        """A spawn a process asked for, with its deterministic id (the SU spawns each id once)."""
        if not self._modules.exists(module_id):
            raise InvalidMessage("Tags['Module']", f"no module {module_id!r:.60} is stored on this node")
        return self._submit_spawn(process_id, module_id, None, tags, data, pushed)

    def _submit_spawn(
        self, process_id: str, module_id: str, record: ModuleRecord | None, user_tags: Tags, data: str,
        pushed: Tags, *, signed: DataItem | None = None,
    ) -> Future[Ack]:
        """Check and submit a spawn: from the API, from a process's result (with ``pushed`` tags), or
        from a signed Process item (whose tags are taken exactly as signed)."""
        compiled = self._modules.compiled(module_id, record)
        given = tag_value(user_tags, "Module")
        if given is not None and given != module_id:
            raise InvalidMessage("Tags['Module']", f"is set by the node to {module_id!r}, got {given!r}")
        # The Scheduler tag picks the shard, as a deployer picks an SU in AO; without one, the node does.
        schedulers = self._scheduler()
        named = tag_value(user_tags, "Scheduler")
        shard = schedulers.shard_named(named) if named is not None else shard_for(process_id, schedulers.count)
        address = schedulers.addresses[shard]
        if signed is not None:
            process = Process(process_id, signed.address, module_id, address, user_tags, data, signed.anchor_text)
        else:
            # aos trusts a message whose From is not its owner only when its pusher is an Authority:
            # the node pushes process-to-process messages, so it is one unless the spawner names others.
            defaults = (("Module", module_id), ("Scheduler", address), ("Authority", self.identity))
            extra = tuple((n, v) for n, v in defaults if tag_value(user_tags, n) is None)
            process = Process(
                process_id, self.identity, module_id, address,
                with_ao_tags(user_tags, "Process") + extra + pushed, data,
            )
        process.validate(self._config.max_data_bytes)
        interval = process.tag("Cron-Interval")
        if interval is not None:
            parse_interval(interval)
        limits = self._limits(process, self._modules.tags(module_id, record))
        self._check_instantiates(module_id, compiled, limits)
        if record is not None:  # the node keeps modules; the shard, the log
            self._modules.add(record)
        return schedulers.submit(
            process, None, fresh_id=not pushed and signed is None, limits=limits,
            signed=signed.to_bytes() if signed is not None else None, shard=shard,
        )

    def _check_instantiates(self, module_id: str, compiled: CompiledModule, limits: tuple[int, int]) -> None:
        """Instantiate a module for a new process once: a start function that traps, or an initial
        memory over the limit, is refused now rather than turning every later message into an Error.
        The outcome depends on nothing but the module and the limits, so it is remembered."""
        key = (module_id, *limits)
        with self._instantiates_lock:
            seen, known = key in self._instantiates, self._instantiates.get(key)
        if not seen:
            self.instantiations += 1
            try:
                Instance(compiled, memory_limit=limits[1], fuel=limits[0])
                known = None
            except ModuleError as exc:  # the module's own doing; a host fault is not remembered
                known = exc
            with self._instantiates_lock:
                self._instantiates[key] = known
                while len(self._instantiates) > _INSTANTIATES_KEPT:
                    self._instantiates.popitem(last=False)
        if known is not None:
            raise type(known)(str(known))

    def _limits(self, process: Process, module_tags: Tags) -> tuple[int, int]:
        """(fuel, memory bytes) for a new process: its Compute-Limit and Memory-Limit tags, else its
        module's, else the node's defaults, up to the node's ceilings. A spawn that asks for more
        itself is refused: a limit is a promise the node makes for every message of the process, and
        it does not make one it will not keep. A module's tag only says what the module may need, and
        published modules carry ao's customary 9e12 (Compute-Limit is a count of wasm-metering gas
        there), so a module over a ceiling gets the ceiling."""
        config = self._config
        chosen = []
        for name, parse, default, ceiling, setting in (
            ("Compute-Limit", parse_compute_limit, config.compute_limit, config.max_compute_limit, "max_compute_limit"),
            ("Memory-Limit", parse_memory_limit, config.memory_limit, config.max_memory_limit, "max_memory_limit"),
        ):
            own = process.tag(name)
            if own:
                value = parse(own)
                if value > ceiling:
                    unit = " bytes" if name == "Memory-Limit" else ""
                    raise InvalidMessage(f"Tags[{name!r}]", f"asks for {value:,}{unit}; this node allows at most "
                                         f"{ceiling:,}{unit} ({setting})")
            else:
                from_module = tag_value(module_tags, name)
                value = min(parse(from_module), ceiling) if from_module is not None else default
            chosen.append(value)
        return chosen[0], chosen[1]

    # -- signed data items ----------------------------------------------------------------------
    def post_item(self, item: DataItem | bytes, *, verify: bool = True) -> Future[Ack] | str:
        """A signed ANS-104 data item, as AO's MU takes it: ``Type=Message`` is sent to its Target,
        ``Type=Process`` spawns (its id is the item's), ``Type=Module`` stores a module (its id is
        returned). With ``verify``, a bad signature raises SignatureError before anything is stored."""
        if not isinstance(item, DataItem):
            item = DataItem.parse(bytes(item))
        if verify:
            item.verify()
        kind = item.tag("Type")
        if kind == "Module":
            return self.add_module(item)
        # AOP-5's items for a process's log: an Attestation (ao's), or an Available (WeaveDrive's)
        log_item = kind == "Attestation" or (kind == "Available" and item.tag("Data-Protocol") == WEAVEDRIVE_PROTOCOL)
        if kind not in ("Message", "Process") and not log_item:
            if item.tag("Data-Protocol") != "ao":
                return self.add_data(item)  # an upload, as to Arweave: data that WeaveDrive can serve
            raise InvalidMessage("Tags['Type']", f"expected Message, Process or Module, got {kind!r}")
        data = _item_text(item)
        tags = item.tags
        refuse_pushed_tags(tags)
        if kind == "Process":
            if item.target_id:
                raise InvalidMessage("Target", "a Type=Process item has no target: the process is its own")
            module_id = tag_value(tags, "Module")
            if module_id is None or not is_id(module_id):
                raise InvalidMessage("Tags['Module']", f"a Process item names its module's id, got {module_id!r}")
            if not self._modules.exists(module_id):
                raise InvalidMessage("Tags['Module']", f"no module {module_id} is stored on this node; "
                                     "post its Type=Module item first")
            if tag_value(tags, "Scheduler") is None:
                raise InvalidMessage("Tags['Scheduler']", f"missing; this node schedules as {self.identity}")
            return self._submit_spawn(item.id, module_id, None, tags, data, (), signed=item)
        if not item.target_id:
            raise InvalidMessage("Target", f"a Type={kind} item needs a target process")
        self._known(item.target_id)
        message = Message(item.id, item.address, item.target_id, tags, data, item.anchor_text)
        return self.post(message, signed=item.to_bytes())

    def _now_ms(self) -> int:
        return int(self._config.clock() * 1000)

    def add_module(self, module: DataItem | bytes, tags: TagsLike = None) -> str:
        """Store a module without spawning it; returns its id. A signed ``Type=Module`` item keeps its
        item id, owner and tags (as on Arweave); plain WASM bytes are stored under their SHA-256,
        with ``tags``. Adding the same module again changes nothing."""
        if isinstance(module, DataItem):
            if tags is not None:
                raise InvalidMessage("tags", "a signed Module item carries its own tags")
            for name, wanted in (("Data-Protocol", "ao"), ("Type", "Module")):
                if module.tag(name) != wanted:
                    raise InvalidMessage(f"Tags[{name!r}]", f"a module item needs {name}={wanted}")
            record, module_id = self._modules.record(
                module.data, None, module.tags, module_id=module.id, owner=module.address,
                signed_by=(encode_id(module.owner), encode_id(module.signature)), signed=module.to_bytes(),
                stored_at=self._now_ms())
        else:
            record, module_id = self._modules.record(bytes(module), None, normalize_tags(tags, "tags"),
                                                     owner=self.identity, stored_at=self._now_ms())
        assert record is not None
        self._modules.add(record)
        return module_id

    def add_data(self, data: DataItem | bytes, tags: TagsLike = None) -> str:
        """Store data for WeaveDrive; returns its id. A signed item keeps its id, owner and tags;
        plain bytes are stored under their SHA-256, owned by the node, with ``tags``."""
        if isinstance(data, DataItem):
            if tags is not None:
                raise InvalidMessage("tags", "a signed item carries its own tags")
            return add_data(self._modules.store, data.data, data.tags, owner=data.address, data_id=data.id)
        return add_data(self._modules.store, data, normalize_tags(tags, "tags"), owner=self.identity)


def _item_text(item: DataItem) -> str:
    try:
        return item.data.decode()
    except UnicodeDecodeError as exc:
        raise InvalidMessage("Data", f"not UTF-8 text (byte {exc.start}); this node hands Data to modules "
                             "as text") from None
