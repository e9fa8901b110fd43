"""Attested logs: a verifier that holds only a shard's public key and an SU page (over real HTTP)
accepts every slot of it, and refuses the page once any byte of any assignment, or of the signature,
is flipped."""

from __future__ import annotations

import copy
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from actorao import Node, SignatureError
from actorao.http import HttpServer
from actorao.su import verify_page


def get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as response:
        doc: dict[str, Any] = orjson.loads(response.read())
        return doc


def flipped(text: str, at: int) -> str:
    """``text`` with one character changed, to another of the same alphabet."""
    swap = {"0": "1", "A": "B", "a": "b", "-": "_", "_": "-"}
    old = text[at]
    return text[:at] + swap.get(old, "0" if old != "0" else "1") + text[at + 1:]


def test_every_slot_of_a_page_verifies_against_the_shards_key_and_a_flipped_byte_does_not(
    tmp_path: Path, counter: bytes
) -> None:
    with Node(tmp_path / "node", workers=1, schedulers=2) as node, HttpServer(node, port=0) as server:
        schedulers = {entry["address"]: entry["key"] for entry in get(f"{server.url}/")["schedulers"]}
        assert set(schedulers) == set(node.schedulers) and all(schedulers.values())
        pid = node.spawn(counter, {"Scheduler": node.schedulers[1]})
        for size in (1, 7, 30, 2):  # several commits, so pages end before, at and after their heads
            node.send_many([(pid, {"Action": "Inc"}, "")] * size)
        key = schedulers[node.schedulers[1]]
        wrong_key = schedulers[node.schedulers[0]]

        proved: list[int] = []
        cursor = None
        while True:
            query = f"limit=9&from={cursor}" if cursor is not None else "limit=9"
            page = get(f"{server.url}/{pid}?{query}")
            proved += verify_page(page, key)
            if not page["page_info"]["has_next_page"]:
                break
            cursor = page["edges"][-1]["cursor"]
        assert proved == list(range(41))  # the spawn and all 40 messages

        page = get(f"{server.url}/{pid}?from-nonce=-1&limit=20")  # by nonce: a page by time keeps bursts whole
        assert verify_page(page, key) == list(range(20))
        with pytest.raises(SignatureError):
            verify_page(page, wrong_key)
        for index in range(len(page["edges"])):
            for name in ("Nonce", "Message", "Timestamp", "Hash-Chain"):
                bent = copy.deepcopy(page)
                tags = bent["edges"][index]["node"]["assignment"]["tags"]
                tag = next(tag for tag in tags if tag["name"] == name)
                tag["value"] = flipped(tag["value"], len(tag["value"]) // 2)
                with pytest.raises(SignatureError):
                    verify_page(bent, key)
        bent = copy.deepcopy(page)
        bent["attestation"]["signature"] = flipped(bent["attestation"]["signature"], 5)
        with pytest.raises(SignatureError):
            verify_page(bent, key)
        if page["attestation"]["tail"]:
            bent = copy.deepcopy(page)
            bent["attestation"]["tail"][0][2] += 1  # a later assignment's timestamp
            with pytest.raises(SignatureError):
                verify_page(bent, key)


def test_a_restarted_shard_keeps_its_key(tmp_path: Path, counter: bytes) -> None:
    with Node(tmp_path / "node", workers=1, schedulers=2) as node:
        keys = node.scheduler_keys()
        pid = node.spawn(counter, {"Scheduler": node.schedulers[1]})
    with Node(tmp_path / "node", workers=1, schedulers=2) as node:
        assert node.scheduler_keys() == keys
        node.send(pid, {"Action": "Inc"})
        page = node.reads.log_page(pid, None, None, 10)
        assert [entry.slot for entry in page[0]] == [0, 1]
