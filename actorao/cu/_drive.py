"""WeaveDrive (AOP-5) over the node's own store: data added to the node, and what a process may read.

Data is stored once under its id (a signed item's, or the SHA-256 of plain bytes) and read in ranges
straight from LMDB. Whether a process may read it is decided from its own log, so every replay and
every node with the same log decides alike: ``/data/<id>`` is admissible when a message with
``Type=Attestation``, ``Message=<id>`` and ``Data-Protocol=ao``, owned by the process's Scheduler or
one of its Attestors, is in the log before the reading message, at or below its Block-Height. In
``Individual`` mode a ``Type=Available``, ``ID=<id>``, ``Data-Protocol=WeaveDrive`` message from them,
under the same rules, admits it as well: ao's loader asks for the attestation first and, in that mode
only, takes the Available item when there is none. The process's ``On-Boot`` id is always admissible.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from actorao._exceptions import InvalidMessage
from actorao.message import Tag, encode_id, is_id
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

    def open(self, path: str) -> StoredFile | None:
        kind, _, data_id = path.lstrip("/").partition("/")
        if kind != "data" or not is_id(data_id):
            return None  # /tx and /block are not served yet: absent, as an unknown path category is
        if data_id != self._on_boot:
            self._check(path, data_id)
        return self.reopen(path, data_id)

    def reopen(self, path: str, data_id: str | None = None) -> StoredFile:
        data_id = data_id or path.rsplit("/", 1)[-1]
        meta = self._store.data_meta(data_id)
        if meta is None:
            raise FileNotAdmissible(path, "it is attested, but this node does not hold the data")
        return StoredFile(self._store, data_id, int(orjson.loads(meta)["size"]))

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
