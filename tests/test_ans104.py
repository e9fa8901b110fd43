"""ANS-104 data items: interop vectors from arweave-js and arbundles, round trips, tampering, limits, JWKs.

tests/data/ans104_vector.json was made once with Node: arweave's deepHash, and items created and signed
by @dha-team/arbundles (the fork aoconnect uses), which signs RSA-PSS with the maximum salt length.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from actorao import InvalidMessage, SignatureError
from actorao.ans104 import (
    MAX_TAG_BYTES,
    DataItem,
    RsaSigner,
    create_data_item,
    decode_tags,
    deep_hash,
    encode_tags,
    load_jwk,
    save_jwk,
)
from actorao.message import encode_id

VECTORS = json.loads((Path(__file__).parent / "data" / "ans104_vector.json").read_text())
TARGET = encode_id(hashlib.sha256(b"a process").digest())
ANCHOR = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="session")
def signer() -> RsaSigner:
    """One 4096-bit key for the whole session: Arweave's type 1 needs 512-byte owners, and keygen is slow."""
    return RsaSigner.generate()


@pytest.fixture(scope="session")
def item(signer: RsaSigner) -> DataItem:
    tags = {"Data-Protocol": "ao", "Action": "Transfer", "Quantity": "100"}
    return create_data_item(signer, "payload ✓", tags, target=TARGET, anchor=ANCHOR)


def _hex_tree(value: Any) -> Any:
    return [_hex_tree(element) for element in value] if isinstance(value, list) else bytes.fromhex(value)


def _pss_salt_length(item: DataItem) -> int:
    """The salt length a type-1 signature was made with, read back out of its EMSA-PSS encoding."""
    modulus = int.from_bytes(item.owner, "big")
    encoded = pow(int.from_bytes(item.signature, "big"), 65537, modulus).to_bytes(512, "big")
    assert encoded[-1] == 0xBC
    masked, digest = encoded[: 512 - 33], encoded[512 - 33 : -1]
    mask = b"".join(hashlib.sha256(digest + counter.to_bytes(4, "big")).digest() for counter in range(15))
    block = bytes([(masked[0] ^ mask[0]) & 0x7F]) + bytes(a ^ b for a, b in zip(masked[1:], mask[1:], strict=False))
    return len(block) - block.index(1) - 1


def _avro_tags(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """Tag bytes without encode_tags' checks, to build items that break the limits."""

    def long(number: int) -> bytes:
        zigzag, out = (number << 1) ^ (number >> 63), bytearray()
        while zigzag > 0x7F:
            out.append((zigzag & 0x7F) | 0x80)
            zigzag >>= 7
        return bytes([*out, zigzag])

    body = b"".join(long(len(name)) + name + long(len(value)) + value for name, value in pairs)
    return long(len(pairs)) + body + long(0)


def _reject_or_refuse(raw: bytes) -> None:
    """Damaged bytes must fail to parse with InvalidMessage or fail to verify with SignatureError."""
    try:
        parsed = DataItem.parse(raw)
    except InvalidMessage as exc:
        assert exc.field
        return
    with pytest.raises(SignatureError):
        parsed.verify()


# --- interop vectors ---


@pytest.mark.parametrize("case", VECTORS["deep_hash"], ids=lambda case: case["name"])
def test_deep_hash_matches_arweave_js(case: dict[str, Any]) -> None:
    assert deep_hash(_hex_tree(case["input_hex"])).hex() == case["digest_hex"]


def test_deep_hash_refuses_str() -> None:
    with pytest.raises(TypeError):
        deep_hash("text")


@pytest.mark.parametrize("case", VECTORS["items"], ids=lambda case: case["name"])
def test_arbundles_items_parse_and_verify(case: dict[str, Any]) -> None:
    raw = bytes.fromhex(case["raw_hex"])
    parsed = DataItem.parse(raw)
    assert parsed.to_bytes() == raw
    assert parsed.signature_type == case["signature_type"]
    assert parsed.id == case["id"]
    assert parsed.address == case["address"]
    assert parsed.tags == tuple((tag["name"], tag["value"]) for tag in case["tags"])
    assert parsed.target_id == case["target"]
    assert parsed.anchor_text == case["anchor"]
    assert parsed.data == bytes.fromhex(case["data_hex"])
    assert parsed.signature_data().hex() == case["signature_data_hex"]
    parsed.verify()


def test_arbundles_signs_with_the_maximum_salt_and_we_accept_it() -> None:
    parsed = DataItem.parse(bytes.fromhex(VECTORS["items"][0]["raw_hex"]))
    assert parsed.owner == base64.urlsafe_b64decode(VECTORS["jwk_n"] + "==")
    assert _pss_salt_length(parsed) == 512 - 32 - 2
    assert parsed.tag("Empty-Value") == ""  # arbundles writes empty values; we accept them
    assert parsed.tag("Grüße") == "☃ snow"


def test_an_item_without_tags_has_no_tag_bytes() -> None:
    bare = DataItem.parse(bytes.fromhex(VECTORS["items"][1]["raw_hex"]))
    assert (bare.tags, bare.raw_tags, bare.target, bare.anchor, bare.data) == ((), b"", None, None, b"")


# --- round trips ---


def test_created_items_round_trip_and_verify(signer: RsaSigner, item: DataItem) -> None:
    parsed = DataItem.parse(item.to_bytes())
    assert parsed == item
    parsed.verify()
    assert parsed.address == signer.address
    assert parsed.target_id == TARGET
    assert parsed.anchor_text == ANCHOR
    assert parsed.data == "payload ✓".encode()
    assert parsed.tag("Action") == "Transfer"
    assert parsed.tag("Missing") is None
    assert len(parsed.id) == 43
    assert _pss_salt_length(parsed) == 32


@pytest.mark.parametrize("salt", [0, 32, "max"])
def test_every_salt_length_verifies(signer: RsaSigner, salt: int | str) -> None:
    length = signer.max_salt_length if salt == "max" else int(salt)
    made = create_data_item(signer, b"x", salt_length=length)
    assert _pss_salt_length(made) == length == (478 if salt == "max" else salt)
    DataItem.parse(made.to_bytes()).verify()


def test_salt_length_out_of_range_is_refused(signer: RsaSigner) -> None:
    with pytest.raises(InvalidMessage) as caught:
        signer.sign(b"x", signer.max_salt_length + 1)
    assert caught.value.field == "salt_length"


def test_target_and_anchor_take_bytes_too(signer: RsaSigner) -> None:
    target = hashlib.sha256(b"t").digest()
    made = create_data_item(signer, tags=(), target=target, anchor=bytes(range(32)))
    assert made.target == target
    assert made.target_id == encode_id(target)
    assert made.anchor == bytes(range(32))
    made.verify()
    with pytest.raises(InvalidMessage) as caught:
        _ = DataItem.parse(create_data_item(signer, anchor=b"\xff" * 32).to_bytes()).anchor_text
    assert caught.value.field == "anchor"


def test_empty_target_and_anchor_mean_none(signer: RsaSigner) -> None:
    made = create_data_item(signer, target="", anchor="")
    assert (made.target, made.anchor, made.target_id, made.anchor_text) == (None, None, "", "")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"target": "not an id"}, "target"),
        ({"target": b"short"}, "target"),
        ({"anchor": "31 characters, one short of 32"}, "anchor"),
        ({"anchor": b"\x00" * 33}, "anchor"),
        ({"target": 7}, "target"),
    ],
)
def test_bad_target_or_anchor_named(signer: RsaSigner, changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        create_data_item(signer, **changes)
    assert caught.value.field == field


# --- tampering and malformed input ---


def _flip(raw: bytes, offset: int, mask: int = 0x01) -> bytes:
    return raw[:offset] + bytes([raw[offset] ^ mask]) + raw[offset + 1 :]


@pytest.mark.parametrize(
    "where",
    ["signature", "owner", "owner's last byte", "target", "anchor", "tag value", "data", "data's last byte"],
)
def test_tampering_breaks_the_signature(item: DataItem, where: str) -> None:
    raw = item.to_bytes()
    tags_start = 2 + 512 + 512 + 33 + 33 + 16
    offsets = {
        "signature": 100,
        "owner": 2 + 512 + 100,
        "owner's last byte": 2 + 512 + 511,  # an even modulus is not an RSA key at all
        "target": 2 + 1024 + 1 + 5,
        "anchor": 2 + 1024 + 33 + 1 + 5,
        "tag value": tags_start + raw[tags_start:].index(b"Transfer"),
        "data": len(raw) - 5,
        "data's last byte": len(raw) - 1,
    }
    tampered = DataItem.parse(_flip(raw, offsets[where]))
    with pytest.raises(SignatureError):
        tampered.verify()


def test_every_truncation_is_refused(item: DataItem) -> None:
    raw = item.to_bytes()
    for cut in range(len(raw)):
        _reject_or_refuse(raw[:cut])
    with pytest.raises(InvalidMessage) as caught:
        DataItem.parse(raw[:700])
    assert caught.value.field == "data item"
    assert "owner" in caught.value.reason


def test_every_flipped_byte_is_refused(item: DataItem) -> None:
    raw = item.to_bytes()
    for offset in range(len(raw)):
        _reject_or_refuse(_flip(raw, offset, 0xFF))


def test_garbage_is_refused() -> None:
    rng = random.Random(104)
    for size in [0, 1, 2, 3, 80, 600, 1100, 1200, 5000]:
        for signature_type in range(9):
            raw = signature_type.to_bytes(2, "little") + rng.randbytes(size)
            _reject_or_refuse(raw)
            _reject_or_refuse(raw[:2] + bytes(size))  # all zeros: flags absent, no tags, data follows
    with pytest.raises(InvalidMessage):
        DataItem.parse("text")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        (lambda raw: b"\x09\x00" + raw[2:], "signature type"),
        (lambda raw: raw[:1026] + b"\x02" + raw[1027:], "target flag"),
        (lambda raw: raw[:1059] + b"\x07" + raw[1060:], "anchor flag"),
        (lambda raw: raw[:1092] + (2).to_bytes(8, "little") + raw[1100:], "tags"),  # header says 2, bytes hold 3
        (lambda raw: raw[:1092] + (200).to_bytes(8, "little") + raw[1100:], "tags"),
        (lambda raw: raw[:1100] + (MAX_TAG_BYTES + 1).to_bytes(8, "little") + raw[1108:], "tags"),
    ],
    ids=["type", "target-flag", "anchor-flag", "count-mismatch", "too-many", "too-many-bytes"],
)
def test_malformed_header_fields_are_named(item: DataItem, patch: Callable[[bytes], bytes], field: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        DataItem.parse(patch(item.to_bytes()))
    assert caught.value.field == field


def test_unverified_signature_types_say_so() -> None:
    raw = (3).to_bytes(2, "little") + bytes(65 + 65 + 2 + 16) + b"data"
    parsed = DataItem.parse(raw)
    assert parsed.signature_type == 3
    with pytest.raises(SignatureError, match="signature type 3 is not verified"):
        parsed.verify()


@pytest.mark.parametrize("signature_type", [2, 4])
def test_ed25519_items_verify(signature_type: int) -> None:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"seed").digest())
    owner = key.public_key().public_bytes_raw()
    raw_tags = encode_tags([("Action", "Ping")])
    unsigned = DataItem(signature_type, bytes(64), owner, None, None, (("Action", "Ping"),), b"hi", raw_tags)
    message = unsigned.signature_data()
    signature = key.sign(message if signature_type == 2 else message.hex().encode())
    signed = DataItem.parse(unsigned.to_bytes()[:2] + signature + unsigned.to_bytes()[66:])
    signed.verify()
    for offset in (10, 70, len(signed.to_bytes()) - 1):
        _reject_or_refuse(_flip(signed.to_bytes(), offset))


@pytest.mark.parametrize(
    "owner_hex",
    [
        "00" * 32,
        "01" + "00" * 31,
        "ec" + "ff" * 31,  # y = p - 1, x = 0, sign bit set
        "ed" + "ff" * 30 + "7f",  # y = p: a non-canonical 0
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",  # order 8, the other y, sign set
    ],
)
def test_small_order_ed25519_owners_are_refused(owner_hex: str) -> None:
    """With a small-order key, some R with S = 0 verifies for any message (OpenSSL and arbundles accept it)."""
    for signature_type in (2, 4):
        for r_hex in ("00" * 32, "01" + "00" * 31, owner_hex):
            raw = signature_type.to_bytes(2, "little") + bytes.fromhex(r_hex) + bytes(32) + bytes.fromhex(owner_hex)
            with pytest.raises(SignatureError, match="small order"):
                DataItem.parse(raw + bytes(18) + b"forged").verify()


# --- tags ---


def test_tags_round_trip_and_keep_order_and_repeats() -> None:
    tags = (("A", "1"), ("A", "2"), ("Ünï", "cödé"), ("Empty", ""))
    assert decode_tags(encode_tags(tags)) == tags
    assert encode_tags(()) == b""
    assert decode_tags(b"") == ()
    assert decode_tags(b"\x00") == ()  # an empty Avro array, as other encoders may write it


def test_tags_in_negative_count_blocks_are_read() -> None:
    # block of -2 items (zigzag 3) followed by its byte size, then a block of 1, then the end
    blocks = b"\x03\x0c" + b"\x02a\x02b" + b"\x02c\x02d" + b"\x02" + b"\x02e\x02f" + b"\x00"
    assert decode_tags(blocks) == (("a", "b"), ("c", "d"), ("e", "f"))


@pytest.mark.parametrize(
    "raw",
    [
        b"\x02\x02a",  # truncated in the value
        b"\x02\x02a\x02b",  # no terminating block
        b"\x02\x02a\x02b\x00\x00",  # trailing bytes
        b"\x02\x02a\x01b\x00",  # negative length
        b"\x02\x04\xff\xfe\x02b\x00",  # name not UTF-8
        b"\x02\x00\x02b\x00",  # empty name
        b"\xff" * 11,  # endless number
        b"\x01\x01",  # negative block size
    ],
)
def test_bad_tag_bytes_are_refused(raw: bytes) -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode_tags(raw)
    assert caught.value.field == "tags"


@pytest.mark.parametrize(
    "tags",
    [
        [(f"T{index}", "v") for index in range(129)],
        [("n" * 1025, "v")],
        [("n", "v" * 3073)],
        [("a" * 1024, "v" * 3000), ("b", "w" * 100)],  # each within its limit, together over MAX_TAG_BYTES
    ],
    ids=["129-tags", "long-name", "long-value", "too-many-bytes"],
)
def test_tag_limits_refused_on_create_and_parse(signer: RsaSigner, tags: list[tuple[str, str]]) -> None:
    with pytest.raises(InvalidMessage):
        create_data_item(signer, tags=tags)
    raw_tags = _avro_tags([(name.encode(), value.encode()) for name, value in tags])
    unsigned = DataItem(1, bytes(512), signer.owner, None, None, tuple(tags), b"", raw_tags)
    with pytest.raises(InvalidMessage) as caught:
        DataItem.parse(unsigned.to_bytes())
    assert caught.value.field == "tags"


# --- keys ---


def test_jwk_round_trip(signer: RsaSigner, tmp_path: Path) -> None:
    jwk = signer.to_jwk()
    assert set(jwk) == {"kty", "n", "e", "d", "p", "q", "dp", "dq", "qi"}
    assert jwk["e"] == "AQAB"
    again = RsaSigner.from_jwk(jwk)
    assert again.address == signer.address
    assert again.to_jwk() == jwk
    path = tmp_path / "wallet.json"
    save_jwk(signer, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_jwk(path)
    assert loaded.address == signer.address
    create_data_item(loaded, b"signed by the loaded key").verify()
    assert [entry.name for entry in tmp_path.iterdir()] == ["wallet.json"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"d": None}, "jwk.d"),
        ({"p": "not base64url!"}, "jwk.p"),
        ({"qi": 12}, "jwk.qi"),
        ({"kty": "EC"}, "jwk.kty"),
        ({"q": "AQAB"}, "jwk"),  # well-formed, but not the key's prime
    ],
)
def test_bad_jwk_fields_are_named(signer: RsaSigner, change: dict[str, Any], field: str) -> None:
    jwk: dict[str, Any] = {**signer.to_jwk(), **change}
    jwk = {name: value for name, value in jwk.items() if value is not None}
    with pytest.raises(InvalidMessage) as caught:
        RsaSigner.from_jwk(jwk)
    assert caught.value.field == field


def test_load_jwk_refuses_non_json(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    path.write_text("{not json")
    with pytest.raises(InvalidMessage) as caught:
        load_jwk(path)
    assert caught.value.field == "jwk"


def test_only_arweave_keys_sign_items() -> None:
    with pytest.raises(InvalidMessage) as caught:
        RsaSigner(rsa.generate_private_key(3, 1024))
    assert caught.value.field == "jwk.e"
    with pytest.raises(InvalidMessage) as caught:
        create_data_item(RsaSigner.generate(1024), b"x")
    assert caught.value.field == "owner"


def test_verify_builds_one_key_per_owner(signer: RsaSigner, item: DataItem) -> None:
    from actorao.ans104 import _rsa_public_key

    item.verify()
    before = _rsa_public_key.cache_info()
    create_data_item(signer, b"another").verify()
    after = _rsa_public_key.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)
