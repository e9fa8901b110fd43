"""What travels between the node and its scheduler shards: requests to assign, and their answers,
as orjson documents inside REQUEST and ACKS frames. Errors travel by class name and arguments and
are raised again on the node's side as the same actorao error.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from actorao import _exceptions as errors
from actorao.message import Message, Process
from actorao.su._scheduler import Ack, NewMessages, RawAck

Item = Message | Process


def item_doc(item: Item) -> list[Any]:
    if isinstance(item, Process):
        return ["P", item.id, item.owner, item.module, item.scheduler, item.tags, item.data, item.anchor]
    return ["M", item.id, item.owner, item.target, item.tags, item.data, item.anchor, item.sender, item.cron]


def item_from(doc: list[Any]) -> Item:
    kind, *fields = doc
    if kind == "P":
        pid, owner, module, scheduler, tags, data, anchor = fields
        return Process(pid, owner, module, scheduler, _tags(tags), data, anchor)
    mid, owner, target, tags, data, anchor, sender, cron = fields
    return Message(mid, owner, target, _tags(tags), data, anchor, sender, cron)


# A new message on the wire: target, the number of its tag set in the request's "tags", data, anchor.
NewRow = tuple[str, int, str, str]


def new_messages(owner: str, doc: dict[str, Any]) -> NewMessages:
    """A request's new messages, from ``owner``: its rows as they came, each tag set rebuilt once."""
    return NewMessages(owner, doc["new"], [_tags(tags) for tags in doc["tags"]])


def _tags(raw: list[list[str]]) -> tuple[tuple[str, str], ...]:
    return tuple((name, value) for name, value in raw)


def request(
    token: int, items: list[Item] | None = None, *, single: bool = False, fresh: bool = False,
    limits: tuple[int, int] | None = None, signed: bytes | None = None, assign_to: str | None = None,
    handoff: dict[str, Any] | None = None,
    new_rows: tuple[list[NewRow], list[tuple[tuple[str, str], ...]]] | None = None,
) -> bytes:
    """One request: ``items`` to assign as they are, or new messages from the node, whose ids the
    shard mints: ``new_rows``, their rows and their tag sets. Senders repeat a few tag sets, so each
    set travels once and each row names its set by number."""
    doc: dict[str, Any] = {"t": token}
    if items is not None:
        doc["items"] = [item_doc(item) for item in items]
    if new_rows is not None:
        doc["new"], doc["tags"] = new_rows
    if handoff is not None:
        doc["handoff"] = handoff
    if single:
        doc["single"] = True
    if fresh:
        doc["fresh"] = True
    if limits is not None:
        doc["limits"] = limits
    if signed is not None:
        doc["signed"] = base64.b64encode(signed).decode()
    if assign_to is not None:
        doc["assign_to"] = assign_to
    return orjson.dumps(doc)


def answer(token: int, acks: list[Ack] | list[RawAck] | Ack | RawAck | dict[str, Any] | None = None,
           error: BaseException | None = None) -> bytes:
    if error is not None:
        return orjson.dumps({"t": token, "error": error_doc(error)})
    if isinstance(acks, dict):
        return orjson.dumps({"t": token, "value": acks})
    # Each ack is written as [id, process, slot, timestamp]: a RawAck as it is, an Ack (a named
    # tuple) through ``default``, which orjson asks for tuple subclasses.
    if isinstance(acks, tuple):
        return orjson.dumps({"t": token, "ack": acks}, default=tuple)
    return orjson.dumps({"t": token, "acks": acks or []}, default=tuple)


def read_answer(raw: bytes) -> tuple[int, list[Ack] | Ack | dict[str, Any] | errors.ActoraoError]:
    doc = orjson.loads(raw)
    if "error" in doc:
        return doc["t"], error_from(doc["error"])
    if "value" in doc:
        value: dict[str, Any] = doc["value"]
        return doc["t"], value
    if "ack" in doc:
        return doc["t"], Ack(*doc["ack"])
    make = tuple.__new__  # each ack arrives as [id, process, slot, timestamp]: Ack's own fields, in order
    return doc["t"], [make(Ack, ack) for ack in doc["acks"]]


def error_doc(error: BaseException) -> list[Any]:
    if isinstance(error, errors.InvalidMessage):
        return ["InvalidMessage", error.field, error.reason]
    name = type(error).__name__ if isinstance(error, errors.ActoraoError) else "ActoraoError"
    return [name, str(error)]


def error_from(doc: list[Any]) -> errors.ActoraoError:
    name, *args = doc
    kind = getattr(errors, name, errors.ActoraoError)
    if not (isinstance(kind, type) and issubclass(kind, errors.ActoraoError)):
        kind = errors.ActoraoError
    try:
        return kind(*args)
    except TypeError:
        return errors.ActoraoError(*args)
