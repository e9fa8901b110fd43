"""ANS-104 data items: the signed binary envelope aoconnect and arbundles send to a MU.

Parses, serializes, signs and verifies data items on ``cryptography``. Arweave RSA-PSS (type 1) items
are signed and verified; ed25519 (type 2) and Solana (type 4) items are verified; the other known
types parse but do not verify. Malformed input raises InvalidMessage naming the field; a bad
signature raises SignatureError.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import orjson
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from actorao._exceptions import InvalidMessage, SignatureError
from actorao.message import (
    MAX_TAG_NAME_BYTES,
    MAX_TAG_VALUE_BYTES,
    MAX_TAGS,
    TagsLike,
    encode_id,
    is_id,
    normalize_tags,
    tag_value,
)

__all__ = [
    "ARWEAVE_SIGNATURE_TYPE",
    "MAX_TAG_BYTES",
    "SIGNATURE_TYPES",
    "DataItem",
    "DeepHashChunk",
    "RsaSigner",
    "SignatureScheme",
    "create_data_item",
    "decode_tags",
    "deep_hash",
    "encode_tags",
    "item_signature",
    "load_jwk",
    "save_jwk",
]

DeepHashChunk: TypeAlias = "bytes | Sequence[DeepHashChunk]"
Tag = tuple[str, str]

ARWEAVE_SIGNATURE_TYPE = 1
ARWEAVE_KEY_BITS = 4096
ARWEAVE_EXPONENT = 65537  # the owner field carries n alone; every verifier assumes e = 65537 ("AQAB")
DEFAULT_SALT_LENGTH = 32  # SHA-256's digest size; arweave-js and arbundles sign with the maximum instead
MAX_TAG_BYTES = 4096  # arbundles' DataItem.verify refuses more encoded tag bytes, so bundlers and MUs do too
_HASH_LENGTH = 32
_ID_BYTES = 32


@dataclass(frozen=True, slots=True)
class SignatureScheme:
    """One ANS-104 signature type: its name and the fixed lengths of its signature and owner fields."""

    name: str
    signature_length: int
    owner_length: int


# arbundles' SIG_CONFIG. Each type fixes its field lengths, so every one of them can be parsed.
SIGNATURE_TYPES: Mapping[int, SignatureScheme] = {
    1: SignatureScheme("arweave", 512, 512),
    2: SignatureScheme("ed25519", 64, 32),
    3: SignatureScheme("ethereum", 65, 65),
    4: SignatureScheme("solana", 64, 32),
    5: SignatureScheme("injectedAptos", 64, 32),
    6: SignatureScheme("multiAptos", 64 * 32 + 4, 32 * 32 + 1),
    7: SignatureScheme("typedEthereum", 65, 42),
}


def _sha384(data: bytes) -> bytes:
    return hashlib.sha384(data).digest()



def item_signature(raw: bytes) -> str:
    """The base64url signature of a data item's bytes, read from its header alone (the item was
    parsed and checked when it came in)."""
    scheme = SIGNATURE_TYPES.get(int.from_bytes(raw[:2], "little"))
    if scheme is None:
        raise InvalidMessage("signature type", f"unknown signature type {int.from_bytes(raw[:2], 'little')}")
    return encode_id(raw[2: 2 + scheme.signature_length])


def deep_hash(value: DeepHashChunk) -> bytes:
    """Arweave's deep hash (SHA-384) of a blob or an arbitrarily nested list of blobs."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        size = value.nbytes if isinstance(value, memoryview) else len(value)
        return _sha384(_sha384(b"blob" + str(size).encode()) + hashlib.sha384(value).digest())
    if isinstance(value, str):  # a str is a Sequence of str: it would recurse forever
        raise TypeError("deep_hash takes bytes or lists of them, not str")
    acc = _sha384(b"list" + str(len(value)).encode())
    for element in value:
        acc = _sha384(acc + deep_hash(element))
    return acc


# --- tags: an Avro array of {name: bytes, value: bytes} records ---


def _check_tag(index: int, name: bytes, value: bytes) -> None:
    # Names must be non-empty, as ANS-104 and normalize_tags say. Values may be empty: ANS-104 says
    # non-empty, but arbundles writes and verifies empty values and aoconnect users send them.
    if not name:
        raise InvalidMessage("tags", f"tag {index} has an empty name")
    if len(name) > MAX_TAG_NAME_BYTES:
        raise InvalidMessage("tags", f"tag {index}'s name is {len(name)} bytes, more than {MAX_TAG_NAME_BYTES}")
    if len(value) > MAX_TAG_VALUE_BYTES:
        raise InvalidMessage("tags", f"tag {index}'s value is {len(value)} bytes, more than {MAX_TAG_VALUE_BYTES}")


def _check_tag_count(count: int) -> None:
    if count > MAX_TAGS:
        raise InvalidMessage("tags", f"{count} tags, more than the {MAX_TAGS} allowed")


def _check_tag_bytes(size: int) -> None:
    if size > MAX_TAG_BYTES:
        raise InvalidMessage("tags", f"{size} bytes of tags, more than the {MAX_TAG_BYTES} allowed")


def _write_long(out: bytearray, number: int) -> None:
    """Append a non-negative Avro long: zigzag, then 7 bits a byte, low first."""
    zigzag = number << 1
    while zigzag > 0x7F:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)


def encode_tags(tags: Iterable[Tag]) -> bytes:
    """The Avro bytes of ``tags`` as arbundles writes them: one block, then 0. No tags, no bytes."""
    out = bytearray()
    encoded: list[tuple[bytes, bytes]] = []
    for index, (name, value) in enumerate(tags):
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidMessage("tags", f"tag {index} must be a pair of str")
        try:
            pair = (name.encode(), value.encode())
        except UnicodeEncodeError:
            raise InvalidMessage("tags", f"tag {index} is not encodable as UTF-8") from None
        _check_tag(index, *pair)
        encoded.append(pair)
    _check_tag_count(len(encoded))
    if not encoded:
        return b""
    _write_long(out, len(encoded))
    for name_bytes, value_bytes in encoded:
        _write_long(out, len(name_bytes))
        out += name_bytes
        _write_long(out, len(value_bytes))
        out += value_bytes
    _write_long(out, 0)
    _check_tag_bytes(len(out))
    return bytes(out)


class _TagReader:
    """A cursor over Avro tag bytes. Every read past the end or out of range is an InvalidMessage."""

    __slots__ = ("pos", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.pos = 0

    def long(self) -> int:
        result = shift = 0
        while True:
            if self.pos >= len(self.raw):
                raise InvalidMessage("tags", f"truncated number at byte {self.pos}")
            byte = self.raw[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return (result >> 1) ^ -(result & 1)
            shift += 7
            if shift > 63:
                raise InvalidMessage("tags", f"number at byte {self.pos} is longer than 10 bytes")

    def blob(self, index: int, part: str) -> bytes:
        size = self.long()
        if size < 0 or self.pos + size > len(self.raw):
            raise InvalidMessage("tags", f"tag {index}'s {part} claims {size} bytes, {len(self.raw) - self.pos} left")
        self.pos += size
        return self.raw[self.pos - size : self.pos]


def _text(index: int, part: str, raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise InvalidMessage("tags", f"tag {index}'s {part} is not UTF-8") from None


def decode_tags(raw: bytes) -> tuple[Tag, ...]:
    """The tags in Avro bytes, in order. Accepts any block layout (a negative block count is followed
    by the block's byte size, which is skipped as arbundles skips it); refuses trailing bytes."""
    _check_tag_bytes(len(raw))
    if not raw:
        return ()
    reader = _TagReader(bytes(raw))
    tags: list[Tag] = []
    while (count := reader.long()) != 0:
        if count < 0:
            count = -count
            if reader.long() < 0:
                raise InvalidMessage("tags", "negative block size")
        _check_tag_count(len(tags) + count)
        for _ in range(count):
            index = len(tags)
            name = reader.blob(index, "name")
            value = reader.blob(index, "value")
            _check_tag(index, name, value)
            tags.append((_text(index, "name", name), _text(index, "value", value)))
    if reader.pos != len(raw):
        raise InvalidMessage("tags", f"{len(raw) - reader.pos} bytes after the end of the tag array")
    return tuple(tags)


# --- the data item ---


class _ItemReader:
    """A cursor over a data item's fixed fields; running out is an InvalidMessage('data item')."""

    __slots__ = ("pos", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.pos = 0

    def take(self, size: int, part: str) -> bytes:
        if self.pos + size > len(self.raw):
            left = len(self.raw) - self.pos
            raise InvalidMessage("data item", f"truncated in the {part}: needs {size} bytes at {self.pos}, {left} left")
        self.pos += size
        return self.raw[self.pos - size : self.pos]

    def integer(self, size: int, part: str) -> int:
        return int.from_bytes(self.take(size, part), "little")

    def optional_id(self, part: str) -> bytes | None:
        flag = self.integer(1, f"{part} flag")
        if flag not in (0, 1):  # ANS-104: any other value makes the item invalid (arbundles reads it as 0)
            raise InvalidMessage(f"{part} flag", f"must be 0 or 1, got {flag}")
        return self.take(_ID_BYTES, part) if flag else None


def _signature_data(
    signature_type: int, owner: bytes, target: bytes | None, anchor: bytes | None, raw_tags: bytes, data: bytes
) -> bytes:
    return deep_hash(
        [b"dataitem", b"1", str(signature_type).encode(), owner, target or b"", anchor or b"", raw_tags, data]
    )


@dataclass(frozen=True, slots=True, repr=False)
class DataItem:
    """One ANS-104 data item. Made by ``parse`` or ``create_data_item``; ``raw_tags`` are the tags'
    Avro bytes exactly as signed, so ``parse(raw).to_bytes() == raw``."""

    signature_type: int
    signature: bytes
    owner: bytes
    target: bytes | None
    anchor: bytes | None
    tags: tuple[Tag, ...]
    data: bytes
    raw_tags: bytes

    @classmethod
    def parse(cls, raw: bytes) -> DataItem:
        """Read a data item's bytes. Raises InvalidMessage naming the first bad field."""
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raise InvalidMessage("data item", f"expected bytes, got {type(raw).__name__}")
        reader = _ItemReader(bytes(raw))
        signature_type = reader.integer(2, "signature type")
        scheme = SIGNATURE_TYPES.get(signature_type)
        if scheme is None:
            raise InvalidMessage("signature type", f"unknown signature type {signature_type}")
        signature = reader.take(scheme.signature_length, "signature")
        owner = reader.take(scheme.owner_length, "owner")
        target = reader.optional_id("target")
        anchor = reader.optional_id("anchor")
        tag_count = reader.integer(8, "tag count")
        tag_bytes = reader.integer(8, "tag byte count")
        _check_tag_count(tag_count)
        _check_tag_bytes(tag_bytes)
        raw_tags = reader.take(tag_bytes, "tags")
        tags = decode_tags(raw_tags)
        if len(tags) != tag_count:
            raise InvalidMessage("tags", f"the header counts {tag_count} tags, the tag bytes hold {len(tags)}")
        data = reader.raw[reader.pos :]
        return cls(signature_type, signature, owner, target, anchor, tags, data, raw_tags)

    def to_bytes(self) -> bytes:
        return b"".join(
            (
                self.signature_type.to_bytes(2, "little"),
                self.signature,
                self.owner,
                b"\x01" + self.target if self.target is not None else b"\x00",
                b"\x01" + self.anchor if self.anchor is not None else b"\x00",
                len(self.tags).to_bytes(8, "little"),
                len(self.raw_tags).to_bytes(8, "little"),
                self.raw_tags,
                self.data,
            )
        )

    @property
    def id(self) -> str:
        """base64url(SHA-256(signature))."""
        return encode_id(hashlib.sha256(self.signature).digest())

    @property
    def address(self) -> str:
        """The owner's Arweave address: base64url(SHA-256(owner))."""
        return encode_id(hashlib.sha256(self.owner).digest())

    @property
    def target_id(self) -> str:
        """The target as a 43-character id, or "" when there is none."""
        return encode_id(self.target) if self.target is not None else ""

    @property
    def anchor_text(self) -> str:
        """The anchor as text (aoconnect sends a 32-character string), or "" when there is none."""
        if self.anchor is None:
            return ""
        try:
            return self.anchor.decode()
        except UnicodeDecodeError:
            raise InvalidMessage("anchor", "is not UTF-8 text") from None

    def tag(self, name: str) -> str | None:
        """The first value of tag ``name``, or None."""
        return tag_value(self.tags, name)

    def signature_data(self) -> bytes:
        """The 48-byte deep hash the signature signs."""
        return _signature_data(self.signature_type, self.owner, self.target, self.anchor, self.raw_tags, self.data)

    def verify(self) -> None:
        """Raise SignatureError unless the signature is the owner's over this item's content."""
        message = self.signature_data()
        try:
            if self.signature_type == ARWEAVE_SIGNATURE_TYPE:
                _rsa_public_key(self.owner).verify(self.signature, message, _VERIFY_PADDING, hashes.SHA256())
            elif self.signature_type == 2:
                _ed25519_public_key(self.owner).verify(self.signature, message)
            elif self.signature_type == 4:  # Solana wallets sign text, so arbundles signs the hash's hex
                _ed25519_public_key(self.owner).verify(self.signature, message.hex().encode())
            else:
                raise SignatureError(f"signature type {self.signature_type} is not verified by this node")
        except InvalidSignature:
            raise SignatureError(f"data item {self.id}: the signature does not match its owner and content") from None

    def __repr__(self) -> str:
        return (
            f"DataItem(id={self.id!r}, signature_type={self.signature_type}, address={self.address!r}, "
            f"target={self.target_id!r}, tags={len(self.tags)}, data={len(self.data)} bytes)"
        )


# Verifying accepts any salt length: arweave-js and arbundles sign with the maximum, we default to 32.
_VERIFY_PADDING = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)


@functools.lru_cache(maxsize=1024)
def _rsa_public_key(owner: bytes) -> rsa.RSAPublicKey:
    """The key an owner field names, built once per owner: verify sits on the HTTP path."""
    try:
        return rsa.RSAPublicNumbers(ARWEAVE_EXPONENT, int.from_bytes(owner, "big")).public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SignatureError(f"the owner is not a usable RSA modulus: {exc}") from None


# The points of order dividing 8 have these y coordinates (mod p; either sign of x). For an owner
# among them, S = 0 with a small-order R verifies any message, and OpenSSL and arbundles' noble-ed25519
# both accept it. No real key is one: a public key is a multiple of the prime-order base point.
_ED25519_P = 2**255 - 19
_ED25519_ORDER_8_Y = 0x05FC536D880238B13933C6D305ACDFD5F098EFF289F4C345B027B2C28F95E826
_ED25519_SMALL_ORDER_Y = frozenset({0, 1, _ED25519_P - 1, _ED25519_ORDER_8_Y, _ED25519_P - _ED25519_ORDER_8_Y})


@functools.lru_cache(maxsize=1024)
def _ed25519_public_key(owner: bytes) -> ed25519.Ed25519PublicKey:
    y = int.from_bytes(owner, "little") & ((1 << 255) - 1)
    if y % _ED25519_P in _ED25519_SMALL_ORDER_Y:
        raise SignatureError("the owner is an ed25519 key of small order, for which anyone can forge signatures")
    try:
        return ed25519.Ed25519PublicKey.from_public_bytes(owner)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SignatureError(f"the owner is not an ed25519 public key: {exc}") from None


# --- signing ---

_JWK_FIELDS = ("n", "e", "d", "p", "q", "dp", "dq", "qi")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def _b64url_int(value: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")).rstrip(b"=").decode()


def _jwk_int(jwk: Mapping[str, object], name: str) -> int:
    text = jwk.get(name)
    if not isinstance(text, str):
        raise InvalidMessage(f"jwk.{name}", "missing" if text is None else f"must be text, got {type(text).__name__}")
    text = text.rstrip("=")
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        raise InvalidMessage(f"jwk.{name}", "is not base64url")
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


class RsaSigner:
    """An Arweave wallet: an RSA key with e = 65537 that signs data items (signature type 1)."""

    __slots__ = ("_owner", "_private_key")

    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        public = private_key.public_key().public_numbers()
        if public.e != ARWEAVE_EXPONENT:
            raise InvalidMessage("jwk.e", f"Arweave keys use e = {ARWEAVE_EXPONENT}, this one has {public.e}")
        self._private_key = private_key
        self._owner = public.n.to_bytes((private_key.key_size + 7) // 8, "big")

    @classmethod
    def generate(cls, bits: int = ARWEAVE_KEY_BITS) -> RsaSigner:
        return cls(rsa.generate_private_key(ARWEAVE_EXPONENT, bits))

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, str]) -> RsaSigner:
        """An Arweave JWK (kty RSA and n, e, d, p, q, dp, dq, qi in base64url). Raises InvalidMessage
        naming the field that is missing or malformed."""
        if not isinstance(jwk, Mapping):
            raise InvalidMessage("jwk", f"must be a JSON object, got {type(jwk).__name__}")
        if jwk.get("kty", "RSA") != "RSA":
            raise InvalidMessage("jwk.kty", f"must be 'RSA', got {jwk.get('kty')!r:.40}")
        n, e, d, p, q, dp, dq, qi = (_jwk_int(jwk, name) for name in _JWK_FIELDS)
        try:
            key = rsa.RSAPrivateNumbers(p, q, d, dp, dq, qi, rsa.RSAPublicNumbers(e, n)).private_key()
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise InvalidMessage("jwk", f"the key's numbers do not make an RSA key: {exc}") from None
        return cls(key)

    def to_jwk(self) -> dict[str, str]:
        numbers = self._private_key.private_numbers()
        values = (
            numbers.public_numbers.n, numbers.public_numbers.e, numbers.d, numbers.p, numbers.q,
            numbers.dmp1, numbers.dmq1, numbers.iqmp,
        )
        return {"kty": "RSA", **{name: _b64url_int(value) for name, value in zip(_JWK_FIELDS, values, strict=True)}}

    @property
    def owner(self) -> bytes:
        """The public modulus n, big-endian: an item's owner field (512 bytes for a 4096-bit key)."""
        return self._owner

    @property
    def address(self) -> str:
        return encode_id(hashlib.sha256(self._owner).digest())

    @property
    def max_salt_length(self) -> int:
        """The longest PSS salt this key can sign with, which arweave-js and arbundles use."""
        return (self._private_key.key_size - 1 + 7) // 8 - _HASH_LENGTH - 2

    def sign(self, message: bytes, salt_length: int | None = None) -> bytes:
        """RSA-PSS with SHA-256 and MGF1(SHA-256); ``salt_length`` defaults to 32 bytes."""
        salt = DEFAULT_SALT_LENGTH if salt_length is None else salt_length
        if not 0 <= salt <= self.max_salt_length:
            raise InvalidMessage("salt_length", f"must be 0..{self.max_salt_length}, got {salt}")
        return self._private_key.sign(
            message, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt), hashes.SHA256()
        )

    def __repr__(self) -> str:
        return f"RsaSigner(address={self.address!r}, bits={self._private_key.key_size})"


def _id_bytes(field_name: str, value: str | bytes | None) -> bytes | None:
    if not isinstance(value, (str, bytes, bytearray)) and value is not None:
        raise InvalidMessage(field_name, f"must be text or bytes, got {type(value).__name__}")
    if not value:  # arbundles treats a missing and an empty target or anchor alike: absent
        return None
    if isinstance(value, (bytes, bytearray)):
        if len(value) != _ID_BYTES:
            raise InvalidMessage(field_name, f"must be {_ID_BYTES} bytes, got {len(value)}")
        return bytes(value)
    if field_name == "target":
        if not is_id(value):
            raise InvalidMessage("target", f"expected a 43-character base64url id, got {value!r:.60}")
        return base64.urlsafe_b64decode(value + "=")
    try:
        encoded = value.encode()
    except UnicodeEncodeError:
        raise InvalidMessage("anchor", "is not encodable as UTF-8") from None
    if len(encoded) != _ID_BYTES:
        raise InvalidMessage("anchor", f"must be {_ID_BYTES} bytes of UTF-8, got {len(encoded)}")
    return encoded


def create_data_item(
    signer: RsaSigner,
    data: bytes | str = b"",
    tags: TagsLike = (),
    target: str | bytes | None = None,
    anchor: str | bytes | None = None,
    *,
    salt_length: int | None = None,
) -> DataItem:
    """A data item signed by ``signer`` (type 1). ``target`` is a process id or 32 bytes; ``anchor``
    is 32 bytes or a 32-character string, as aoconnect sends it."""
    if len(signer.owner) != SIGNATURE_TYPES[ARWEAVE_SIGNATURE_TYPE].owner_length:
        raise InvalidMessage("owner", f"Arweave data items need a {ARWEAVE_KEY_BITS}-bit key")
    if isinstance(data, str):
        data = data.encode()
    pairs = normalize_tags(tags, "tags")
    raw_tags = encode_tags(pairs)
    target_bytes = _id_bytes("target", target)
    anchor_bytes = _id_bytes("anchor", anchor)
    message = _signature_data(ARWEAVE_SIGNATURE_TYPE, signer.owner, target_bytes, anchor_bytes, raw_tags, data)
    signature = signer.sign(message, salt_length)
    return DataItem(
        ARWEAVE_SIGNATURE_TYPE, signature, signer.owner, target_bytes, anchor_bytes, pairs, bytes(data), raw_tags
    )


def load_jwk(path: str | os.PathLike[str]) -> RsaSigner:
    """The wallet in an Arweave JWK file."""
    try:
        jwk = orjson.loads(Path(path).read_bytes())
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage("jwk", f"{path} is not JSON: {exc}") from None
    return RsaSigner.from_jwk(jwk)


def save_jwk(signer: RsaSigner, path: str | os.PathLike[str]) -> None:
    """Write ``signer`` as an Arweave JWK readable by its owner alone (0600), replacing any file there
    in one step so that a crash leaves the old key or the new one."""
    target = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)  # mkstemp makes it 0600
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(orjson.dumps(signer.to_jwk()))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
