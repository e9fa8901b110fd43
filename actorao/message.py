"""ao's data model: Message, Process, Assignment and Result, their validation and their orjson codec.

A message is what enters; an assignment is what the SU made of it (a slot in one process's order); the
JSON a module sees is built from both. Imports nothing else of actorao's but the error tree.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import itertools
import os
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import orjson

from actorao._exceptions import InvalidMessage

__all__ = [
    "DATA_PROTOCOL",
    "MAINNET_VARIANT",
    "VARIANT",
    "Assignment",
    "Message",
    "Process",
    "Result",
    "TagsLike",
    "encode_id",
    "is_id",
    "new_id",
    "normalize_tags",
    "process_env",
]

DATA_PROTOCOL = "ao"
VARIANT = "ao.TN.1"
MAINNET_VARIANT = "ao.N.1"  # what aoconnect's mainnet mode (AO-Core) tags its items with
MAX_TAGS = 128  # ANS-104's limits on tags
MAX_TAG_NAME_BYTES = 1024
MAX_TAG_VALUE_BYTES = 3072
ID_LENGTH = 43

Tag = tuple[str, str]
TagsLike = Mapping[str, Any] | Iterable[Any] | None

_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")


# base64url through binascii and a translation table: the base64 module's wrappers cost the SU a
# third of each hash-chain link (two ids a link, one per message).
URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def encode_id(digest: bytes) -> str:
    """ao's id text for a 32-byte digest: base64url without padding (43 characters)."""
    return binascii.b2a_base64(digest, newline=False).translate(URLSAFE).rstrip(b"=").decode()


def decode_id(text: str) -> bytes:
    """The bytes of base64url ``text`` (unpadded); ValueError (binascii.Error, or UnicodeEncodeError
    for text that is not ASCII) when it is not base64."""
    return binascii.a2b_base64(text.encode("ascii").translate(_FROM_URLSAFE) + b"=")


class _IdSource:
    """Fresh ids without a syscall each, from a random per-process prefix and a counter: the prefix
    makes ids from different runs differ; the counter, ids within one.

    Without parts, an id is the 24-byte prefix and the 8-byte big-endian counter themselves, with no
    hash: the ids a run mints share their first 32 characters, so the SU's message index takes them
    as near-appends, a few B-tree pages per commit. Random ids touch a page each (measured with LMDB
    here: 14.8 against 3.2 µs of CPU per put, at 1,000 puts a commit). With parts, an id is the
    SHA-256 of prefix, counter and parts."""

    def __init__(self) -> None:
        self._reseed()
        # A forked child must not repeat its parent's ids. Reseeding at fork, rather than comparing
        # os.getpid() on every call, keeps a syscall off the path of every message (10% of the
        # node process's time on the noop workload).
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._prefix = os.urandom(24)
        self._counter = itertools.count()

    def __call__(self, *parts: bytes) -> str:
        if not parts:
            return encode_id(self._prefix + next(self._counter).to_bytes(8, "big"))
        digest = hashlib.sha256(self._prefix + next(self._counter).to_bytes(8, "little"))
        for part in parts:
            digest.update(part)
        return encode_id(digest.digest())

    def many(self, count: int) -> tuple[list[str], tuple[bytes, ...]]:
        """``count`` fresh ids as calls without parts give them, as text and as ASCII bytes, encoded in
        one step: a shard mints one per message. Each id is padded to 33 bytes, which base64 encodes
        to 44 characters on its own, so the encoding of all of them is that of each, side by side,
        and the 43 characters before each 44th are its id."""
        packing, splitting = _id_runs(count)
        fields: list[bytes | int] = [self._prefix] * (2 * count)
        fields[1::2] = itertools.islice(self._counter, count)  # a run of the counter no other call gets
        ids: tuple[bytes, ...] = splitting.unpack(
            binascii.b2a_base64(packing.pack(*fields), newline=False).translate(URLSAFE))
        return list(map(bytes.decode, ids)), ids


@functools.lru_cache(maxsize=64)
def _id_runs(count: int) -> tuple[struct.Struct, struct.Struct]:
    """How ``count`` ids are packed (prefix, big-endian counter, a zero byte, each) and how their
    base64 is split (43 characters of each 44)."""
    return struct.Struct(">" + "24sQx" * count), struct.Struct("43sx" * count)


new_id = _IdSource()
new_id.__doc__ = "A fresh id: unique per call, mixed with the given parts."


def is_id(value: object) -> bool:
    return isinstance(value, str) and _ID_PATTERN.fullmatch(value) is not None


def require_id(field_name: str, value: object) -> str:
    if not is_id(value):
        raise InvalidMessage(field_name, f"expected a 43-character base64url id, got {value!r:.60}")
    return str(value)


def utf8_length(text: str, field_name: str) -> int:
    """``text``'s length in UTF-8; InvalidMessage if it cannot be UTF-8 (a lone surrogate), so that it
    is refused here, for its sender alone, and never reaches a JSON encoder inside a group commit."""
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        raise InvalidMessage(field_name, "is not valid Unicode text (a lone surrogate)") from None


def normalize_tags(tags: TagsLike, field_name: str = "Tags") -> tuple[Tag, ...]:
    """Tags as ao orders them: a tuple of (name, value) pairs. Accepts a mapping, pairs, or
    ``{"name": ..., "value": ...}`` objects; names may repeat. Values must be text (numbers are
    written out, as aoconnect does)."""
    if tags is None:
        return ()
    if isinstance(tags, (str, bytes)) or not isinstance(tags, (Mapping, Iterable)):
        raise InvalidMessage(field_name, f"expected a list of tags or a mapping, got {type(tags).__name__}")
    items: Iterable[Any] = tags.items() if isinstance(tags, Mapping) else tags
    out: list[Tag] = []
    # This runs for every message sent, so the common case (a pair of short ASCII strings) is checked
    # first and cheaply: error texts are built only on the way out, and only text that is not ASCII,
    # or is long, is encoded to count its bytes.
    for index, item in enumerate(items):
        if type(item) is tuple and len(item) == 2:
            name, value = item
        elif isinstance(item, Mapping):
            if set(item) != {"name", "value"}:
                raise InvalidMessage(f"{field_name}[{index}]", "a tag object needs exactly 'name' and 'value'")
            name, value = item["name"], item["value"]
        else:
            try:
                name, value = item
            except (TypeError, ValueError):
                raise InvalidMessage(f"{field_name}[{index}]", f"expected a (name, value) pair, got {item!r:.60}") \
                    from None
        if type(value) is not str:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise InvalidMessage(f"{field_name}[{name!r}]", f"value must be text, got {type(value).__name__}")
            value = str(value)
        if type(name) is not str or not name:
            if not isinstance(name, str) or not name:
                raise InvalidMessage(f"{field_name}[{index}]", "tag name must be non-empty text")
            name = str(name)
        if not (name.isascii() and len(name) <= MAX_TAG_NAME_BYTES) and \
                utf8_length(name, f"{field_name}[{name[:40]!r}]") > MAX_TAG_NAME_BYTES:
            raise InvalidMessage(f"{field_name}[{name[:40]!r}]", f"name longer than {MAX_TAG_NAME_BYTES} bytes")
        if not (value.isascii() and len(value) <= MAX_TAG_VALUE_BYTES) and \
                utf8_length(value, f"{field_name}[{name!r}]") > MAX_TAG_VALUE_BYTES:
            raise InvalidMessage(f"{field_name}[{name!r}]", f"value longer than {MAX_TAG_VALUE_BYTES} bytes")
        out.append((name, value))
    if len(out) > MAX_TAGS:
        raise InvalidMessage(field_name, f"{len(out)} tags, more than the {MAX_TAGS} allowed")
    return tuple(out)


def tag_value(tags: Iterable[Tag], name: str) -> str | None:
    """The first value of tag ``name``, or None."""
    for key, value in tags:
        if key == name:
            return value
    return None


def check_ao_tags(tags: tuple[Tag, ...], expected_type: str) -> None:
    for name, wanted in (("Data-Protocol", DATA_PROTOCOL), ("Variant", VARIANT), ("Type", expected_type)):
        value = tag_value(tags, name)
        if value is None:
            raise InvalidMessage(f"Tags[{name!r}]", f"missing; an ao {expected_type.lower()} needs {name}={wanted}")
        if value != wanted and not (name == "Variant" and value == MAINNET_VARIANT):
            raise InvalidMessage(f"Tags[{name!r}]", f"expected {wanted!r}, got {value!r}")


WEAVEDRIVE_PROTOCOL = "WeaveDrive"


def check_log_item_tags(tags: tuple[Tag, ...]) -> None:
    """The tags of an item sent to a process: an ao ``Message``, or one of the two items AOP-5's
    WeaveDrive looks for in a process's log: an ao ``Attestation``, or ``Type=Available`` with
    ``Data-Protocol=WeaveDrive`` (which admits data in ``Individual`` mode)."""
    kind, protocol = tag_value(tags, "Type"), tag_value(tags, "Data-Protocol")
    if kind == "Available" and protocol == WEAVEDRIVE_PROTOCOL:
        return
    if protocol is not None and protocol != DATA_PROTOCOL:
        raise InvalidMessage("Tags['Data-Protocol']", f"expected {DATA_PROTOCOL!r}, got {protocol!r}; the only "
                             f"other item a process's log takes is Type=Available with Data-Protocol="
                             f"{WEAVEDRIVE_PROTOCOL} (AOP-5), and this is Type={kind!r}")
    check_ao_tags(tags, "Attestation" if kind == "Attestation" else "Message")


def check_data(data: object, max_data_bytes: int) -> None:
    if not isinstance(data, str):
        raise InvalidMessage("Data", f"must be text, got {type(data).__name__}")
    size = len(data) if data.isascii() else utf8_length(data, "Data")
    if size > max_data_bytes:
        raise InvalidMessage("Data", f"{size} bytes, over the node's limit of {max_data_bytes}")


def check_anchor(anchor: object) -> None:
    if not isinstance(anchor, str) or len(anchor) > 32:
        raise InvalidMessage("Anchor", "must be text of at most 32 characters")
    if anchor and not anchor.isascii():
        utf8_length(anchor, "Anchor")


def check_contents(
    tags: tuple[Tag, ...], anchor: object, data: object, message_type: str, max_data_bytes: int,
    *, tags_normalized: bool = False,
) -> None:
    """What every ao message or process must satisfy besides its ids: an anchor of at most 32
    characters, well-formed tags carrying ao's Data-Protocol, Variant and Type, and text data within
    the limit. ``tags_normalized`` skips re-checking tags that came out of normalize_tags."""
    check_anchor(anchor)
    if not tags_normalized and normalize_tags(tags) != tags:
        raise InvalidMessage("Tags", "must be a tuple of (name, value) text pairs")
    if message_type == "Message":
        check_log_item_tags(tags)
    else:
        check_ao_tags(tags, message_type)
    check_data(data, max_data_bytes)


_MEMORY_UNITS = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40}
_MEMORY_LIMIT = re.compile(r"(\d+)(?:-(b|kb|mb|gb|tb))?")


def parse_memory_limit(text: str) -> int:
    """ao's Memory-Limit: bytes, or a count and a unit such as ``"1-gb"`` or ``"512-mb"``."""
    match = _MEMORY_LIMIT.fullmatch(text.strip().lower())
    if match is None or int(match.group(1)) <= 0:
        raise InvalidMessage("Tags['Memory-Limit']", f"expected bytes or a size like '1-gb', got {text!r}")
    return int(match.group(1)) * _MEMORY_UNITS[match.group(2) or "b"]


def parse_compute_limit(text: str) -> int:
    """ao's Compute-Limit: a positive whole number of fuel units."""
    if not text.strip().isdigit() or int(text) <= 0:
        raise InvalidMessage("Tags['Compute-Limit']", f"expected a positive whole number, got {text!r}")
    return int(text)


PUSHED_TAGS = ("From-Process", "From-Module", "Pushed-For")  # set by the node's messenger alone


def refuse_pushed_tags(tags: tuple[Tag, ...]) -> None:
    """A message from outside may not claim to have been pushed by a process: From would be forged."""
    for name in PUSHED_TAGS:
        if tag_value(tags, name) is not None:
            raise InvalidMessage(f"Tags[{name!r}]", "is set by the node when a process sends; a message from "
                                 "outside cannot carry it (its From is its signer)")


_CHECKED_TAGS: dict[tuple[Any, ...], tuple[Tag, ...]] = {}
_CHECKED_TAGS_MAX = 4096  # distinct tag sets remembered; past it, new ones are checked every time


def checked_message_tags(tags: TagsLike) -> tuple[Tag, ...]:
    """``with_ao_tags(tags, "Message")``, checked as a message from outside must be: well-formed,
    ao's tags right, none of the tags only the node sets. Remembered by content, since senders repeat
    a few tag sets (``{"Action": "Transfer"}``) and this runs for every message sent."""
    kind = type(tags)
    if kind is dict or kind is tuple:  # the common case, looked up before anything is checked:
        try:  # every set remembered is text only, so only an equal set of text can find it
            hit = _CHECKED_TAGS.get((kind, *(tags.items() if isinstance(tags, dict) else tags or ())))
        except TypeError:  # an unhashable value: checked below, which names it
            hit = None
        if hit is not None:
            return hit
    key = _text_tags_key(tags)
    normalized = with_ao_tags(tags, "Message")
    check_log_item_tags(normalized)
    refuse_pushed_tags(normalized)
    if key is not None and len(_CHECKED_TAGS) < _CHECKED_TAGS_MAX:
        _CHECKED_TAGS[key] = normalized
    return normalized


def _text_tags_key(tags: TagsLike) -> tuple[Any, ...] | None:
    """A key for a small set of text tags (a dict, or a tuple of pairs), or None: only text is keyed,
    so that a value such as True, equal to 1 as a key, never stands for another."""
    if type(tags) is dict and len(tags) <= 16:
        pairs: Iterable[Any] = tags.items()
    elif type(tags) is tuple and len(tags) <= 16:
        pairs = tags
    else:
        return None
    key = tuple(pairs)
    for pair in key:
        if type(pair) is not tuple or len(pair) != 2 or type(pair[0]) is not str or type(pair[1]) is not str:
            return None
    return (type(tags), *key)


def with_ao_tags(tags: TagsLike, message_type: str) -> tuple[Tag, ...]:
    """``tags`` with Data-Protocol, Variant and Type added where absent, the way aoconnect adds them."""
    pairs = normalize_tags(tags)
    present = {name for name, _ in pairs}
    defaults = (("Data-Protocol", DATA_PROTOCOL), ("Variant", VARIANT), ("Type", message_type))
    return tuple(pair for pair in defaults if pair[0] not in present) + pairs


@dataclass(frozen=True, slots=True)
class Message:
    """A message to one process: ao's Id, Owner, Target, Anchor, Tags and Data."""

    id: str
    owner: str
    target: str
    tags: tuple[Tag, ...]
    data: str = ""
    anchor: str = ""
    sender: str = ""  # ao's From when it is not the Owner: the process that pushed it (MU only)
    cron: bool = False  # a tick of the process's Cron-Interval, assigned by the node's cron

    def validate(self, max_data_bytes: int) -> None:
        """Raise InvalidMessage naming the first bad field."""
        require_id("Id", self.id)
        require_id("Owner", self.owner)
        require_id("Target", self.target)
        if self.sender:
            require_id("From", self.sender)
        check_contents(self.tags, self.anchor, self.data, "Message", max_data_bytes)

    def tag(self, name: str) -> str | None:
        return tag_value(self.tags, name)


@dataclass(frozen=True, slots=True)
class Process:
    """A process's spawn message. Its id is the process id; it is slot 0 of its own log."""

    id: str
    owner: str
    module: str
    scheduler: str
    tags: tuple[Tag, ...]
    data: str = ""
    anchor: str = ""

    def validate(self, max_data_bytes: int) -> None:
        require_id("Id", self.id)
        require_id("Owner", self.owner)
        require_id("Module", self.module)
        require_id("Scheduler", self.scheduler)
        check_contents(self.tags, self.anchor, self.data, "Process", max_data_bytes)
        for name, wanted in (("Module", self.module), ("Scheduler", self.scheduler)):
            if tag_value(self.tags, name) != wanted:
                raise InvalidMessage(f"Tags[{name!r}]", f"must be present and equal {wanted!r}")

    def tag(self, name: str) -> str | None:
        return tag_value(self.tags, name)

    def as_message(self) -> Message:
        return Message(self.id, self.owner, self.id, self.tags, self.data, self.anchor)


@dataclass(frozen=True, slots=True)
class Assignment:
    """What the SU made of a message: its slot in one process's order, stamped and chained."""

    process: str
    slot: int
    message: str
    timestamp: int
    hash_chain: str
    block_height: int = 0
    epoch: int = 0

    @property
    def id(self) -> str:
        """Derived from the assignment's content, so the chain can be re-checked from the log alone."""
        return encode_id(_assignment_digest(self.process, self.slot, self.message, self.timestamp, self.hash_chain))

    def next_hash_chain(self) -> str:
        """The hash chain of the slot after this one: SHA-256(this id ‖ this hash chain)."""
        return encode_id(next_link(self.process, self.slot, self.message, self.timestamp, self.hash_chain,
                                   decode_id(self.hash_chain)))

    @staticmethod
    def genesis_hash_chain(process: str) -> str:
        return encode_id(hashlib.sha256(decode_id(process)).digest())


def _assignment_digest(process: str, slot: int, message: str, timestamp: int, hash_chain: str) -> bytes:
    return hashlib.sha256(
        ASSIGNMENT_TEXT % (process.encode(), slot, message.encode(), timestamp, hash_chain.encode())).digest()


# What an assignment's id hashes, process|slot|message|timestamp|hash chain, as the SU formats it from the
# UTF-8 bytes of each text (which its heads keep).
ASSIGNMENT_TEXT = b"%b|%d|%b|%d|%b"


def next_link(process: str, slot: int, message: str, timestamp: int, hash_chain: str, hash_chain_raw: bytes) -> bytes:
    """``Assignment(process, slot, message, timestamp, hash_chain).next_hash_chain()`` as its 32 bytes, given
    the hash chain's bytes too."""
    return hashlib.sha256(_assignment_digest(process, slot, message, timestamp, hash_chain) + hash_chain_raw).digest()


def module_json(message: Message, assignment: Assignment | None, *, timestamp: int = 0, signature: str = "") -> bytes:
    """The message as a JSON-1 module reads it, with ao's CU's keys in ao's CU's order (the text lands in
    the module's memory, so the order is part of the state): its message schema's, which every message
    passes through before the loader stringifies it. ``Signature`` (base64url) when it came in signed,
    ``Forwarded-By`` (the pushing signer) only for a message a process sent, an empty Anchor as null (the
    SU's page says null). Without an assignment it is a read-only (dry-run) message: no Epoch, Nonce or
    Hash-Chain, stamped with ``timestamp``.

    The SU writes one per message, so it is built from three parts: the fields before Tags, the tags
    (a sender repeats a few tag sets: each is encoded once, see ``tags_json``), and the fields after."""
    if assignment is not None and not signature and not message.sender:  # what the SU writes for most messages
        return assigned_json(orjson.dumps(message.id)[1:-1], orjson.dumps(message.data), orjson.dumps(message.owner),
                             orjson.dumps(message.target), message.anchor, tags_json(message.tags), assignment.slot,
                             assignment.timestamp, assignment.hash_chain.encode(), message.cron,
                             assignment.epoch, assignment.block_height)
    head: dict[str, Any] = {"Id": message.id}
    if signature:
        head["Signature"] = signature
    head["Data"] = message.data
    head["Owner"] = message.owner
    head["Target"] = message.target
    head["Anchor"] = message.anchor or None
    head["From"] = message.sender or message.owner
    if message.sender:
        head["Forwarded-By"] = message.owner
    if assignment is not None:
        tail = {"Epoch": assignment.epoch, "Nonce": assignment.slot, "Timestamp": assignment.timestamp,
                "Block-Height": assignment.block_height, "Hash-Chain": assignment.hash_chain,
                "Cron": message.cron, "Read-Only": False}
    else:
        tail = {"Timestamp": timestamp, "Block-Height": 0, "Cron": message.cron, "Read-Only": True}
    return b"".join((orjson.dumps(head)[:-1], b',"Tags":', tags_json(message.tags), b",", orjson.dumps(tail)[1:]))


def assigned_template(owner_json: bytes, tags: bytes, cron: bool = False, epoch: int = 0, block_height: int = 0
                      ) -> bytes:
    """The module JSON of an assigned message with no signature and no sender, with the fields that
    change from one message to the next left open: ``template % (id, data_json, target_json,
    anchor_json, slot, timestamp, hash_chain)``, where ``id`` and ``hash_chain`` are the text between
    their quotes. A shard builds one for each tag set of a request, and one formatting step a message."""
    owner, tags = owner_json.replace(b"%", b"%%"), tags.replace(b"%", b"%%")
    return (b'{"Id":"%%b","Data":%%b,"Owner":%b,"Target":%%b,"Anchor":%%b,"From":%b,"Tags":%b,"Epoch":%d,'
            b'"Nonce":%%d,"Timestamp":%%d,"Block-Height":%d,"Hash-Chain":"%%b","Cron":%b,"Read-Only":false}'
            % (owner, owner, tags, epoch, block_height, b"true" if cron else b"false"))


def assigned_json(
    id_text: bytes, data_json: bytes, owner_json: bytes, target_json: bytes, anchor: str, tags: bytes,
    slot: int, timestamp: int, hash_chain: bytes, cron: bool = False, epoch: int = 0, block_height: int = 0,
) -> bytes:
    """``module_json`` of an assigned message with no signature and no sender, from its fields as JSON
    (``orjson.dumps`` of each; ``id_text`` and ``hash_chain`` are the text between their quotes):
    byte for byte what the dictionaries would give, in one formatting step."""
    return assigned_template(owner_json, tags, cron, epoch, block_height) % (
        id_text, data_json, target_json, orjson.dumps(anchor) if anchor else b"null", slot, timestamp, hash_chain)


_TAGS_JSON: dict[tuple[Tag, ...], bytes] = {}
_TAGS_JSON_KEPT = 4096


def tags_json(tags: tuple[Tag, ...]) -> bytes:
    """``tags`` as ao's CU writes them, [{"name", "value"}, ...], from a bounded memo."""
    try:
        encoded = _TAGS_JSON.get(tags)
    except TypeError:  # tags given as a list: not kept
        return orjson.dumps([{"name": name, "value": value} for name, value in tags])
    if encoded is None:
        encoded = orjson.dumps([{"name": name, "value": value} for name, value in tags])
        if len(_TAGS_JSON) >= _TAGS_JSON_KEPT:
            _TAGS_JSON.clear()
        _TAGS_JSON[tags] = encoded
    return encoded


def process_env(process_json: bytes, module_id: str, module_meta: bytes) -> bytes:
    """The env argument of a module's ``handle``: the process's and its module's id, owner and tags,
    from the process's spawn as its log holds it and the module's stored metadata."""
    process = orjson.loads(process_json)
    module = orjson.loads(module_meta)
    return orjson.dumps(
        {
            "Process": {"Id": process["Id"], "Owner": process["Owner"], "Tags": process["Tags"]},
            "Module": {"Id": module_id, "Owner": module["owner"], "Tags": module["tags"]},
        }
    )


def assignment_from_module_json(raw: bytes, process: str) -> Assignment:
    """The assignment a log entry records, for ``process`` (whose log holds it)."""
    doc = orjson.loads(raw)
    return Assignment(process, doc["Nonce"], doc["Id"], doc["Timestamp"], doc["Hash-Chain"],
                      doc["Block-Height"], doc["Epoch"])


@dataclass(frozen=True, slots=True)
class Result:
    """What evaluating one message produced: ao's Output, Messages, Spawns, Assignments and Error."""

    output: Any = ""
    messages: tuple[Any, ...] = ()
    spawns: tuple[Any, ...] = ()
    assignments: tuple[Any, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "Output": self.output,
            "Messages": list(self.messages),
            "Spawns": list(self.spawns),
            "Assignments": list(self.assignments),
        }
        if self.error is not None:
            doc["Error"] = self.error
        return orjson.dumps(doc)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Result:
        doc = orjson.loads(raw)
        get = doc.get
        # Most results send nothing: their empty lists need no tuple built
        messages, spawns, assignments = get("Messages"), get("Spawns"), get("Assignments")
        return _result(
            get("Output", ""),
            tuple(messages) if messages else (),
            tuple(spawns) if spawns else (),
            tuple(assignments) if assignments else (),
            get("Error"),
        )

    def raise_for_error(self) -> Result:
        """Raise the ModuleError the Error names; return self when there is none."""
        from actorao import _exceptions as errors

        if self.error is None:
            return self
        kind, _, _ = self.error.partition(":")
        exc_type = {
            "ComputeLimitExceeded": errors.ComputeLimitExceeded,
            "MemoryLimitExceeded": errors.MemoryLimitExceeded,
            "Trap": errors.Trap,
        }.get(kind, errors.ModuleError)
        raise exc_type(self.error)


# A frozen dataclass's __init__ sets each field through object.__setattr__, looked up afresh each time:
# 1.8 µs a Result, against 0.5 through the slots' own setters. A stream's caller builds one per message.
_RESULT_FIELDS = ("output", "messages", "spawns", "assignments", "error")
if tuple(field.name for field in fields(Result)) != _RESULT_FIELDS:  # _result would leave one unset
    raise ImportError(f"Result's fields changed: update _RESULT_FIELDS and _result to {fields(Result)}")
_RESULT_SLOTS = tuple(Result.__dict__[name].__set__ for name in _RESULT_FIELDS)


def _result(output: Any, messages: tuple[Any, ...], spawns: tuple[Any, ...], assignments: tuple[Any, ...],
            error: str | None) -> Result:
    """``Result(output, messages, spawns, assignments, error)``, the same object, built faster."""
    result = object.__new__(Result)
    set_output, set_messages, set_spawns, set_assignments, set_error = _RESULT_SLOTS
    set_output(result, output)
    set_messages(result, messages)
    set_spawns(result, spawns)
    set_assignments(result, assignments)
    set_error(result, error)
    return result


def block_id(height: int) -> str:
    """The id of the node's block at ``height``: it has no chain, so ids come from the height alone
    (GraphQL answers the same ids)."""
    return encode_id(hashlib.sha256(b"actorao block|%d" % height).digest())
