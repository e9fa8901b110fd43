"""WeaveDrive (AOP-5) over the node's own store: data added to the node, and what a process may read.

Data is stored once under its id (a signed item's, or the SHA-256 of plain bytes) and read in ranges
straight from LMDB. Whether a process may read it is decided from its own log, so every replay and
every node with the same log decides alike: ``/data/<id>`` is admissible when a message with
``Type=Attestation``, ``Message=<id>`` and ``Data-Protocol=ao``, owned by the process's Scheduler or
one of its Attestors, is in the log before the reading message, at or below its Block-Height. In
``Individual`` mode a ``Type=Available``, ``ID=<id>``, ``Data-Protocol=WeaveDrive`` message from them,
under the same rules, admits it as well: ao's loader asks for the attestation first and, in that mode
only, takes the Available item when there is none. The process's ``On-Boot`` id is always admissible.

``/tx/<id>`` and ``/block/<height>`` are headers in JSON, made from the log alone (see ``_tx`` and
``_block``), so a replay reads the same bytes; what the log does not show is absent (fd 0).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from actorao._exceptions import InvalidMessage
from actorao.message import Tag, block_id, encode_id, is_id
from actorao.persist import Store
from actorao.vm import FileNotAdmissible

_MODES = ("Assignments", "Individual")


def add_data(store: Store, data: bytes, tags: tuple[Tag, ...], *, owner: str, data_id: str | None = None) -> str:
    """Store ``data`` for WeaveDrive; returns its id (the SHA-256 of the bytes unless ``data_id`` is
    given, a signed item's). Adding the same data again changes nothing."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidMessage("data", f"expected bytes, got {type(data).__name__}")
    data_id = data_id or encode_id(hashlib.sha256(data).digest())
    meta = orjson.dumps({"owner": owner, "tags": [{"name": name, "value": value} for name, value in tags],
                         "size": len(data)})
    store.write(lambda txn: store.put_data(txn, data_id, bytes(data), meta))
    return data_id


class BytesFile:
    """A small file made whole in memory: a header of ``/tx`` or ``/block``."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.size = len(data)

    def read(self, offset: int, length: int) -> bytes:
        return self._data[offset:offset + length]


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def tx_header(tx_id: str, owner: str, tags: Iterable[tuple[str, str]], size: int, *, target: str = "",
              anchor: str = "", signature: str = "") -> bytes:
    """A transaction's headers as an Arweave gateway's ``/tx/<id>`` answers them (tags base64url), with
    ``ownerAddress`` added, as ao's loader adds it. The owner's key is not kept, so ``owner`` is empty."""
    return orjson.dumps({
        "format": 2, "id": tx_id, "last_tx": anchor, "owner": "", "ownerAddress": owner, "target": target,
        "quantity": "0", "reward": "0", "data_root": "", "data_size": str(size), "signature": signature,
        "tags": [{"name": _b64(name), "value": _b64(value)} for name, value in tags]})


class StoredFile:
    """Stored data as a WeaveDrive file: each read copies only its range out of the map."""

    def __init__(self, store: Store, data_id: str, size: int) -> None:
        self._store = store
        self._id = data_id
        self.size = size

    def read(self, offset: int, length: int) -> bytes:
        return self._store.data_range(self._id, offset, length) or b""


def _tags(doc: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for tag in doc.get("Tags") or ():
        out.setdefault(str(tag.get("name")), []).append(str(tag.get("value")))
    return out


def weavedrive_enabled(env: bytes) -> bool:
    """Whether the process or its module carries ``Extension: WeaveDrive``."""
    doc = orjson.loads(env)
    return any("WeaveDrive" in _tags(doc[part]).get("Extension", ()) for part in ("Process", "Module"))


class ProcessDrive:
    """What one process may read, as of one message of its log."""

    def __init__(self, store: Store, env: bytes, log_range: Callable[[int, int], Iterable[tuple[int, bytes]]],
                 slot: int, message: bytes) -> None:
        self._store = store
        self._log_range = log_range
        self._slot = slot
        self._message = message
        doc = orjson.loads(env)
        process, module = _tags(doc["Process"]), _tags(doc["Module"])
        self._mode = (process.get("Availability-Type") or module.get("Availability-Type") or ["Assignments"])[0]
        self._attestors = set(process.get("Scheduler", ())) | set(process.get("Attestor", ()))
        self._on_boot = next(iter(process.get("On-Boot", ())), None)

    def open(self, path: str) -> BytesFile | StoredFile | None:
        kind, _, name = path.lstrip("/").partition("/")
        if kind == "block":
            return self._block(name)
        if not is_id(name) or kind not in ("data", "tx"):
            return None  # absent, as ao's loader answers an unknown path category
        if kind == "tx":
            return self._tx(path, name)
        if name != self._on_boot:
            self._check(path, name)
        return self.reopen(path, name)

    def reopen(self, path: str, data_id: str | None = None) -> BytesFile | StoredFile:
        kind, _, name = path.lstrip("/").partition("/")
        if kind in ("tx", "block"):  # made again from the same log, so the same bytes
            file = self._tx(path, name) if kind == "tx" else self._block(name)
            if file is None:
                raise FileNotAdmissible(path, "it was open before a restore, and the log no longer shows it")
            return file
        data_id = data_id or name
        meta = self._store.data_meta(data_id)
        if meta is None:
            raise FileNotAdmissible(path, "it is attested, but this node does not hold the data")
        return StoredFile(self._store, data_id, int(orjson.loads(meta)["size"]))

    def _entries(self) -> Iterable[dict[str, Any]]:
        """The log up to and including the reading message."""
        for _, entry in self._log_range(0, self._slot - 1):
            yield orjson.loads(entry)
        yield orjson.loads(self._message)

    def _tx(self, path: str, tx_id: str) -> BytesFile | None:
        """``/tx/<id>``: a message of the process's own log, up to the reading one, or data this node
        holds that the process may read as ``/data/<id>``. Anything else is absent: which items a node
        happens to hold must not change what a process sees."""
        for doc in self._entries():
            if doc.get("Id") == tx_id:
                data = str(doc.get("Data") or "")
                tags = [(str(tag.get("name")), str(tag.get("value"))) for tag in doc.get("Tags") or ()]
                return BytesFile(tx_header(tx_id, str(doc.get("Owner") or ""), tags, len(data.encode()),
                                           target=str(doc.get("Target") or ""), anchor=str(doc.get("Anchor") or ""),
                                           signature=str(doc.get("Signature") or "")))
        if tx_id != self._on_boot:
            try:
                self._check(path, tx_id)
            except FileNotAdmissible:
                return None
        meta = self._store.data_meta(tx_id)
        if meta is None:
            raise FileNotAdmissible(path, "it is attested, but this node does not hold the data")
        doc = orjson.loads(meta)
        tags = [(str(tag["name"]), str(tag["value"])) for tag in doc["tags"]]
        return BytesFile(tx_header(tx_id, str(doc["owner"]), tags, int(doc["size"])))

    def _block(self, name: str) -> BytesFile | None:
        """``/block/<height>``: a height at or below the reading message's, at which the process's log
        has a message; its timestamp (seconds) is the earliest of them. Absent otherwise."""
        if not name.isdigit() or len(name) > 12:
            return None
        height = int(name)
        if height > int(orjson.loads(self._message).get("Block-Height") or 0):
            return None
        stamps = [int(doc.get("Timestamp") or 0) for doc in self._entries()
                  if int(doc.get("Block-Height") or 0) == height]
        if not stamps:
            return None
        return BytesFile(orjson.dumps({
            "indep_hash": block_id(height), "height": height, "timestamp": min(stamps) // 1000,
            "previous_block": block_id(height - 1) if height > 0 else ""}))

    def _check(self, path: str, data_id: str) -> None:
        if self._mode not in _MODES:
            raise FileNotAdmissible(path, f"Availability-Type {self._mode!r} is not served here")
        height = int(orjson.loads(self._message).get("Block-Height") or 0)
        wanted = {("Attestation", "Message", "ao")}
        if self._mode == "Individual":
            wanted.add(("Available", "ID", "WeaveDrive"))
        for _, entry in self._log_range(0, self._slot - 1):
            doc = orjson.loads(entry)
            if doc.get("Owner") not in self._attestors or int(doc.get("Block-Height") or 0) > height:
                continue
            tags = _tags(doc)
            for kind, field, protocol in wanted:
                if (kind in tags.get("Type", ()) and data_id in tags.get(field, ())
                        and protocol in tags.get("Data-Protocol", ())):
                    return
        raise FileNotAdmissible(path, "no attestation of it from the process's Scheduler or Attestors is in its log")
