"""Attesting a shard's log. Each shard has an Ed25519 key. Every group commit signs, once, the heads
of the hash chains it moved: (process, slot, hash chain) for each process it assigned to. A slot's
hash chain leads, link by link, to every later head, so one signature covers every assignment
before it; signing each assignment would cost a signature per message.

An SU page carries the attestation that covers its last slot, with the assignments between that
slot and the attested head (its ``tail``), so a verifier holding only the shard's public key and the
page checks every slot of it (``verify_page``): flip one byte of any assignment and the chain, or the
signature, no longer holds.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from typing import Any

import lmdb
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from actorao._exceptions import SignatureError
from actorao.message import Assignment, encode_id
from actorao.persist import Store

__all__ = ["Attester", "handoff_problem", "public_key_of", "verify_handoff", "verify_page"]

_SECRET = "attest key"  # meta: the shard's Ed25519 private key (raw, 32 bytes); never leaves the shard
_PUBLIC = "attest public key"  # meta: its public key, base64url, for the node to serve


class Attester:
    """Signs the heads of each commit inside its transaction, so attestation and assignments are
    durable together."""

    def __init__(self, store: Store, scheduler: str) -> None:
        secret = store.meta_value(_SECRET, lambda: ed25519.Ed25519PrivateKey.generate().private_bytes_raw())
        assert secret is not None
        self._key = ed25519.Ed25519PrivateKey.from_private_bytes(secret)
        self.public_key = encode_id(self._key.public_key().public_bytes_raw())
        store.meta_value(_PUBLIC, lambda: self.public_key.encode())
        self._store = store
        self.scheduler = scheduler

    def sign(self, document: bytes) -> str:
        """The shard's signature over ``document`` (a hand-off record), base64url."""
        return _b64(self._key.sign(document))

    def attest(self, txn: lmdb.Transaction, heads: list[list[Any]], commit: int) -> None:
        """Sign the heads commit number ``commit`` moved, [process, slot, hash chain] each, and keep the
        signature under that number."""
        if not heads:
            return
        heads.sort()  # one per process: the order is the processes'
        doc = orjson.dumps({"scheduler": self.scheduler, "heads": heads})
        signature = self._key.sign(doc)
        record = orjson.dumps({"doc": doc.decode(), "signature": _b64(signature)})
        self._store.put_attestation(txn, commit, record)


def public_key_of(store: Store) -> str | None:
    """A shard's public key, as its store keeps it (None before the shard first started)."""
    raw = store.meta_value(_PUBLIC)
    return None if raw is None else raw.decode()


def verify_page(page: dict[str, Any], public_key: str) -> list[int]:
    """Check an SU page (``GET /{process}``) against a shard's public key; return the slots it
    proves. Raise SignatureError naming the first thing that does not hold."""
    attestation = page.get("attestation")
    if not isinstance(attestation, dict):
        raise SignatureError("the page carries no attestation")
    doc_text, signature = str(attestation.get("doc", "")), str(attestation.get("signature", ""))
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(_unb64(public_key)).verify(_unb64(signature), doc_text.encode())
    except (InvalidSignature, ValueError, binascii.Error) as exc:
        raise SignatureError("the attestation's signature does not verify with this key") from exc
    chain = [_assignment(edge["node"]["assignment"]) for edge in page.get("edges", [])]
    if not chain:
        return []
    pid = chain[0].process
    chain += [Assignment(pid, slot, message, timestamp, hash_chain)
              for slot, message, timestamp, hash_chain in attestation.get("tail", [])]
    heads = {head[0]: (head[1], head[2]) for head in orjson.loads(doc_text)["heads"]}
    if pid not in heads:
        raise SignatureError(f"the attestation covers no head of process {pid}")
    if chain[0].slot == 0 and chain[0].hash_chain != Assignment.genesis_hash_chain(pid):
        raise SignatureError("slot 0's hash chain is not the process's genesis")
    for before, after in itertools.pairwise(chain):
        if after.process != pid or after.slot != before.slot + 1:
            raise SignatureError(f"slot {after.slot} does not follow slot {before.slot} of {pid}")
        if after.hash_chain != before.next_hash_chain():
            raise SignatureError(f"the hash chain breaks between slots {before.slot} and {after.slot}")
    if (chain[-1].slot, chain[-1].hash_chain) != heads[pid]:
        raise SignatureError(f"the chain ends at slot {chain[-1].slot}, not at the attested head {heads[pid][0]}")
    return [assignment.slot for assignment in chain[: len(page["edges"])]]


def verify_handoff(record: bytes, public_key: str) -> None:
    """Check a hand-off record (``node.rehost``) against the public key of the shard that released the
    process: its signature covers every other field, as the shard signed them (keys sorted)."""
    doc = orjson.loads(record)
    signature = str(doc.pop("signature", ""))
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(_unb64(public_key)).verify(
            _unb64(signature), orjson.dumps(doc, option=orjson.OPT_SORT_KEYS))
    except (InvalidSignature, ValueError, binascii.Error) as exc:
        raise SignatureError(f"the hand-off of {doc.get('process')} at slot {doc.get('slot')} is not signed by "
                             f"shard {doc.get('from_shard')}'s key") from exc


def handoff_problem(record: bytes, stores: list[Store]) -> str | None:
    """Why a hand-off record does not verify against the key of the shard (among ``stores``, by index)
    that released the process; None when it does."""
    index = orjson.loads(record).get("from_shard")
    key = public_key_of(stores[index]) if isinstance(index, int) and 0 <= index < len(stores) else None
    if key is None:
        return f"the hand-off names shard {index}, which has no key here"
    try:
        verify_handoff(record, key)
    except SignatureError as exc:
        return str(exc)
    return None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _assignment(doc: dict[str, Any]) -> Assignment:
    tags = {tag["name"]: tag["value"] for tag in doc["tags"]}
    try:
        return Assignment(tags["Process"], int(tags["Nonce"]), tags["Message"], int(tags["Timestamp"]),
                          tags["Hash-Chain"])
    except (KeyError, ValueError) as exc:
        raise SignatureError(f"an assignment of the page is malformed: {exc}") from None
