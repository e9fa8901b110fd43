from __future__ import annotations

import hashlib
import os
from dataclasses import replace

import pytest

from actorao import InvalidMessage, Message, Process, Result, Trap
from actorao.message import (
    Assignment,
    decode_id,
    encode_id,
    is_id,
    module_json,
    new_id,
    normalize_tags,
    parse_compute_limit,
    parse_memory_limit,
    with_ao_tags,
)

PID = encode_id(hashlib.sha256(b"process").digest())
OWNER = encode_id(hashlib.sha256(b"owner").digest())
MID = encode_id(hashlib.sha256(b"message").digest())


def good_message(**changes: object) -> Message:
    fields: dict[str, object] = {
        "id": MID, "owner": OWNER, "target": PID, "tags": with_ao_tags({"Action": "Inc"}, "Message"), "data": "",
    }
    fields.update(changes)
    return Message(**fields)  # type: ignore[arg-type]


def test_ids_are_43_char_base64url_of_a_digest() -> None:
    assert len(PID) == 43
    assert decode_id(PID) == hashlib.sha256(b"process").digest()


def test_tags_keep_order_and_repeats_and_accept_three_shapes() -> None:
    assert normalize_tags({"A": "1", "B": 2}) == (("A", "1"), ("B", "2"))
    assert normalize_tags([("A", "1"), ("A", "2")]) == (("A", "1"), ("A", "2"))
    assert normalize_tags([{"name": "A", "value": "1"}]) == (("A", "1"),)


@pytest.mark.parametrize(
    ("tags", "field"),
    [
        ([("", "x")], "Tags[0]"),
        ([("A", None)], "Tags['A']"),
        ([("A",)], "Tags[0]"),
        ([{"name": "A"}], "Tags[0]"),
        ([("A", "x" * 3073)], "Tags['A']"),
        ([(f"T{i}", "v") for i in range(129)], "Tags"),
    ],
)
def test_bad_tags_name_the_field(tags: object, field: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        normalize_tags(tags)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_ao_tags_are_added_where_absent_and_kept_where_given() -> None:
    tags = with_ao_tags({"Action": "Inc", "Type": "Message"}, "Message")
    assert tags[:2] == (("Data-Protocol", "ao"), ("Variant", "ao.TN.1"))
    assert ("Type", "Message") in tags and ("Action", "Inc") in tags
    assert len(tags) == 4


def test_a_valid_message_passes() -> None:
    good_message().validate(1000)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"target": "nope"}, "Target"),
        ({"owner": "x" * 42}, "Owner"),
        ({"id": ""}, "Id"),
        ({"tags": (("Action", "Inc"),)}, "Tags['Data-Protocol']"),
        ({"tags": (("Data-Protocol", "ao"), ("Variant", "ao.TN.2"), ("Type", "Message"))}, "Tags['Variant']"),
        ({"tags": (("Data-Protocol", "ao"), ("Variant", "ao.TN.1"))}, "Tags['Type']"),
        ({"tags": (("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Process"))}, "Tags['Type']"),
        ({"data": "x" * 1001}, "Data"),
        ({"data": b"bytes"}, "Data"),
        ({"anchor": "a" * 33}, "Anchor"),
    ],
)
def test_invalid_messages_raise_one_error_naming_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        good_message(**changes).validate(1000)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_process_needs_module_and_scheduler_tags_matching_its_fields() -> None:
    tags = with_ao_tags({"Module": MID, "Scheduler": OWNER}, "Process")
    Process(PID, OWNER, MID, OWNER, tags).validate(100)
    with pytest.raises(InvalidMessage) as caught:
        Process(PID, OWNER, MID, OWNER, with_ao_tags({"Module": MID}, "Process")).validate(100)
    assert caught.value.field == "Tags['Scheduler']"


def test_hash_chain_links_each_slot_to_the_one_before() -> None:
    genesis = Assignment.genesis_hash_chain(PID)
    assert decode_id(genesis) == hashlib.sha256(decode_id(PID)).digest()
    first = Assignment(PID, 0, PID, 1000, genesis)
    expected = hashlib.sha256(decode_id(first.id) + decode_id(genesis)).digest()
    assert decode_id(first.next_hash_chain()) == expected


def test_module_json_carries_ao_fields() -> None:
    import orjson

    doc = orjson.loads(module_json(good_message(data="hi"), Assignment(PID, 7, MID, 123, PID)))
    assert doc["Nonce"] == 7 and doc["Timestamp"] == 123 and doc["Hash-Chain"] == PID
    assert doc["From"] == OWNER and doc["Data"] == "hi" and doc["Read-Only"] is False
    assert {"name": "Action", "value": "Inc"} in doc["Tags"]


def test_module_json_keys_come_in_ao_cus_order() -> None:
    """ao's CU parses every message with its messageSchema (servers/cu/src/domain/model.js), a zod
    object that keeps its own keys in its own order; the loader stringifies that into memory."""
    import orjson

    scheduled = ["Id", "Signature", "Data", "Owner", "Target", "Anchor", "From", "Tags", "Epoch", "Nonce",
                 "Timestamp", "Block-Height", "Hash-Chain", "Cron", "Read-Only"]
    assignment = Assignment(PID, 7, MID, 123, PID, 5, 0)
    signed = orjson.loads(module_json(good_message(data="hi"), assignment, signature="c2ln"))
    assert list(signed) == scheduled and signed["Signature"] == "c2ln" and signed["Anchor"] is None
    unsigned = orjson.loads(module_json(good_message(), assignment))
    assert list(unsigned) == [key for key in scheduled if key != "Signature"]
    pushed = orjson.loads(module_json(replace(good_message(), sender=PID), assignment))
    plain = [key for key in scheduled if key != "Signature"]
    assert list(pushed) == [*plain[:6], "Forwarded-By", *plain[6:]]
    assert pushed["From"] == PID and pushed["Forwarded-By"] == OWNER
    dry = orjson.loads(module_json(good_message(), None, timestamp=99))
    assert list(dry) == ["Id", "Data", "Owner", "Target", "Anchor", "From", "Tags", "Timestamp", "Block-Height",
                         "Cron", "Read-Only"]
    assert dry["Read-Only"] is True and dry["Timestamp"] == 99


@pytest.mark.parametrize("data", ["", "hi", 'quote " and \\ back\nslash', "naïve ☃ \u2028", "x" * 5000, "50%d %s"])
@pytest.mark.parametrize("anchor", ["", "0" * 32, 'a"b'])
@pytest.mark.parametrize("cron", [False, True])
def test_module_json_of_an_assignment_is_the_bytes_its_fields_encode_to(data: str, anchor: str, cron: bool) -> None:
    """The SU builds a message's JSON in one formatting step: it must be, byte for byte, what encoding
    its fields in ao's CU's order gives (the text lands in the module's memory)."""
    import orjson

    tags = with_ao_tags({"Action": "Inc", "Note": 'é "quoted" 100%s %b %%'}, "Message")
    message = good_message(data=data, anchor=anchor, cron=cron, tags=tags)
    assignment = Assignment(PID, 2**40 + 3, MID, 1_700_000_000_123, MID, 9, 4)
    expected = orjson.dumps({
        "Id": MID, "Data": data, "Owner": OWNER, "Target": PID, "Anchor": anchor or None, "From": OWNER,
        "Tags": [{"name": name, "value": value} for name, value in tags], "Epoch": 4, "Nonce": 2**40 + 3,
        "Timestamp": 1_700_000_000_123, "Block-Height": 9, "Hash-Chain": MID, "Cron": cron, "Read-Only": False})
    assert module_json(message, assignment) == expected


def test_result_codec_round_trips_and_maps_errors() -> None:
    result = Result("2", ({"Target": PID},), (), (), None)
    assert Result.from_json(result.to_json()) == result
    failed = Result.from_json(b'{"Output":"","Error":"Trap: unreachable"}')
    assert not failed.ok
    with pytest.raises(Trap, match="unreachable"):
        failed.raise_for_error()


@pytest.mark.parametrize(
    ("text", "size"),
    [("1-gb", 1 << 30), ("512-mb", 512 << 20), ("64-KB", 64 << 10), ("65536", 65536), ("2-tb", 2 << 40)],
)
def test_memory_limits_read_as_ao_writes_them(text: str, size: int) -> None:
    assert parse_memory_limit(text) == size


@pytest.mark.parametrize("text", ["", "1-gib", "-1", "0", "1.5-gb", "gb"])
def test_a_bad_memory_limit_names_its_tag(text: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_memory_limit(text)
    assert caught.value.field == "Tags['Memory-Limit']"


def test_compute_limits_are_positive_whole_numbers() -> None:
    assert parse_compute_limit("9000000000000") == 9_000_000_000_000
    for bad in ("", "0", "-5", "1e9", "many"):
        with pytest.raises(InvalidMessage, match="Compute-Limit"):
            parse_compute_limit(bad)


def test_a_forked_child_never_repeats_its_parents_ids() -> None:
    new_id()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover -- the child
        os.write(write, new_id().encode())
        os._exit(0)
    os.waitpid(child, 0)
    from_child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert len(from_child) == 43 and from_child != new_id()  # the parent's next id: same counter, other seed


@pytest.mark.parametrize(
    ("tags", "anchor", "data", "field"),
    [({"\ud800": "x"}, "", "", "Tags['\\ud800']"), ({"Action": "\udfff"}, "", "", "Tags['Action']"),
     ({}, "\ud800", "", "Anchor"), ({}, "", "text \udc80", "Data")],
)
def test_text_that_cannot_be_utf8_is_refused_by_name(tags: dict[str, str], anchor: str, data: str, field: str) -> None:
    """A lone surrogate would fail the JSON encoder inside the SU's group commit, and with it every
    message in that batch: it is refused up front instead, for its sender alone."""
    with pytest.raises(InvalidMessage) as refused:
        message = good_message(tags=with_ao_tags(tags, "Message"), anchor=anchor, data=data)
        message.validate(1 << 20)
    assert refused.value.field == field


def test_tag_limits_count_utf8_bytes() -> None:
    assert normalize_tags({"a": "é" * 1536})[0][1] == "é" * 1536  # 3,072 bytes: at the limit
    with pytest.raises(InvalidMessage, match="longer than 3072 bytes"):
        normalize_tags({"a": "é" * 1537})
    with pytest.raises(InvalidMessage, match="longer than 1024 bytes"):
        normalize_tags({"é" * 513: "x"})


def test_checked_message_tags_are_remembered_by_content_and_never_confuse_true_with_one() -> None:
    from actorao.message import checked_message_tags

    first = checked_message_tags({"Action": "Inc", "N": "1"})
    assert first == (("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Message"), ("Action", "Inc"),
                     ("N", "1"))
    assert checked_message_tags({"Action": "Inc", "N": "1"}) is first  # remembered
    assert checked_message_tags({"Action": "Inc", "N": 1}) == first  # a number is written out, as before
    with pytest.raises(InvalidMessage) as caught:
        checked_message_tags({"Action": "Inc", "N": True})
    assert caught.value.field == "Tags['N']"
    for _ in range(2):  # refused every time, remembered or not
        with pytest.raises(InvalidMessage) as caught:
            checked_message_tags({"Action": "Inc", "From-Process": "x" * 43})
        assert caught.value.field == "Tags['From-Process']"
    with pytest.raises(InvalidMessage):
        checked_message_tags({"Type": "Process"})


def test_ids_minted_many_at_once_are_those_minted_one_by_one() -> None:
    """A shard mints a request's ids in one encoding step: each is the id of its prefix and counter,
    as ``new_id()`` encodes it, and none is given twice."""
    before = new_id()
    texts, raw = new_id.many(300)
    after = new_id()
    counter = int.from_bytes(decode_id(before)[24:], "big")
    assert texts == [encode_id(decode_id(before)[:24] + (counter + 1 + at).to_bytes(8, "big")) for at in range(300)]
    assert [text.encode() for text in texts] == list(raw)
    assert int.from_bytes(decode_id(after)[24:], "big") == counter + 301
    assert all(is_id(text) for text in texts) and new_id.many(0) == ([], ())
