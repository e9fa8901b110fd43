"""Fuzzing the edge with hypothesis: ANS-104 data items (valid signed items, mutated, and random bytes)
fed to the parser and POSTed to a real node over real HTTP on 127.0.0.1, and arbitrary requests to its
routes. Nothing may answer 5xx; a refusal is a 4xx with a JSON error; nothing refused is stored, and
what is accepted is exactly a validly signed item. Example counts are bounded (ACTORAO_SOAK raises them).
"""

from __future__ import annotations

import http.client
import os
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actorao import InvalidMessage, Node, SignatureError, ans104, examples
from actorao.http import HttpServer
from tests.soak import SOAK

AO = [("Data-Protocol", "ao"), ("Variant", "ao.TN.1")]
FUZZ = settings(max_examples=100 * SOAK, deadline=None, derandomize=SOAK == 1, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@dataclass(frozen=True)
class Served:
    node: Node
    host: str
    port: int
    pid: str
    signer: ans104.RsaSigner
    item: bytes  # a valid signed message to ``pid``

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=120)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    signer = ans104.RsaSigner.generate()
    path: Path = tmp_path_factory.mktemp("fuzz") / "node"
    with Node(path, workers=1, schedulers=1, result_wait=1.0) as node, \
            HttpServer(node, port=0, max_body=256 * 1024) as server:
        pid = node.spawn(examples.wasm("counter"))
        item = ans104.create_data_item(signer, "1", [*AO, ("Type", "Message"), ("Action", "Inc")], target=pid)
        parsed = urllib.parse.urlsplit(server.url)
        assert parsed.hostname is not None and parsed.port is not None
        yield Served(node, parsed.hostname, parsed.port, pid, signer, item.to_bytes())


def mutated(original: bytes) -> st.SearchStrategy[bytes]:
    """``original`` with a few bytes flipped, cut, inserted or spliced: mostly near-valid items."""
    size = len(original)
    flip = st.tuples(st.integers(0, size - 1), st.integers(1, 255)).map(
        lambda at: original[:at[0]] + bytes([original[at[0]] ^ at[1]]) + original[at[0] + 1:])
    cut = st.integers(0, size - 1).map(lambda at: original[:at])
    insert = st.tuples(st.integers(0, size), st.binary(min_size=1, max_size=16)).map(
        lambda at: original[:at[0]] + at[1] + original[at[0]:])
    splice = st.tuples(st.integers(0, size - 1), st.binary(max_size=64)).map(
        lambda at: original[:at[0]] + at[1] + original[at[0] + len(at[1]):])
    return st.one_of(flip, cut, insert, splice)


def items(original: bytes) -> st.SearchStrategy[bytes]:
    headers = st.binary(min_size=2, max_size=2)  # a signature type, then anything
    return st.one_of(mutated(original), st.binary(max_size=2048), st.tuples(headers, st.binary(max_size=1200)).map(
        lambda parts: parts[0] + parts[1]))


def check_parse(raw: bytes, original: bytes) -> bool:
    """Parse and verify ``raw``: only InvalidMessage or SignatureError may come out, and an item that
    verifies is the original item. Returns whether it verified."""
    try:
        item = ans104.DataItem.parse(raw)
    except InvalidMessage as exc:
        assert exc.field, "a refusal names the field"
        return False
    assert ans104.DataItem.parse(item.to_bytes()) == item
    try:
        item.verify()
    except (SignatureError, InvalidMessage):
        return False
    assert item.to_bytes() == ans104.DataItem.parse(original).to_bytes(), "only the signer's own item verifies"
    return True


_SIGNER = ans104.RsaSigner.generate()
_ITEM = ans104.create_data_item(_SIGNER, "data", [*AO, ("Type", "Message"), ("Action", "Inc"), ("N", "1")],
                                target="A" * 43, anchor=os.urandom(16).hex()).to_bytes()


@FUZZ
@given(raw=items(_ITEM))
def test_the_parser_refuses_bad_items_by_name_and_verifies_only_the_signed_one(raw: bytes) -> None:
    check_parse(raw, _ITEM)


def test_the_parser_verifies_the_item_itself() -> None:
    assert check_parse(_ITEM, _ITEM)


def stored(served: Served, item_id: str) -> bool:
    logs = served.node._logs
    return logs.assignment_of(item_id) is not None or logs.signed_item(item_id) is not None


@FUZZ
@given(raw=st.data())
def test_post_of_mutated_items_answers_4xx_or_accepts_only_the_valid_item(served: Served, raw: st.DataObject) -> None:
    body = raw.draw(items(served.item))
    status, answer = served.request("POST", "/", body, {"Content-Type": "application/octet-stream"})
    assert status < 500, (status, answer[:300])
    try:
        item_id: str | None = ans104.DataItem.parse(body).id
    except InvalidMessage:
        item_id = None
    if status == 202:
        assert body == served.item or ans104.DataItem.parse(body).to_bytes() == served.item
        assert orjson.loads(answer)["id"] == item_id
    else:
        assert 400 <= status < 500 and isinstance(orjson.loads(answer).get("error"), str), (status, answer[:300])
        if item_id is not None and item_id != ans104.DataItem.parse(served.item).id:
            assert not stored(served, item_id), "a refused item left something behind"


def test_the_valid_item_is_accepted_once_and_the_log_holds_nothing_else(served: Served) -> None:
    """Run after the fuzz: the process's log is its spawn plus, at most, the one valid item, however
    often it came; and the process verifies."""
    status, answer = served.request("POST", "/", served.item, {"Content-Type": "application/octet-stream"})
    assert status == 202, answer
    node = served.node
    node.result(orjson.loads(answer)["id"], timeout=60)
    assert node.reads.latest(served.pid).slot == 1
    assert node.verify(served.pid).ok


PATHS = st.one_of(
    st.sampled_from(["/", "/timestamp", "/dry-run", "/graphql", "/push", "/actorao/status", "/metrics",
                     "/result/x", "/results/x", "/state/x", "/processes/x", "/x/latest", "/monitor/x", "/cron/x",
                     "/x~process@1.0/push", "/x/slot/current", "/x~process@1.0/compute/results=1"]),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="#?%"), max_size=60)
    .map(lambda text: "/" + text),
)
QUERY = st.dictionaries(st.sampled_from(["process-id", "from", "to", "limit", "sort", "from-nonce", "to-nonce",
                                         "assign", "cursor", "x"]),
                        st.one_of(st.text(max_size=20), st.integers(-2**70, 2**70).map(str)), max_size=4)


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "DELETE", "PUT"]), path=PATHS, query=QUERY,
       body=st.one_of(st.binary(max_size=512), st.sampled_from([b"{}", b"[]", b'{"Tags": 1}', b"null"])),
       content_type=st.sampled_from(["application/json", "application/octet-stream", "application/ans104",
                                     "text/plain"]),
       real_pid=st.booleans())
def test_arbitrary_requests_never_get_a_5xx(served: Served, method: str, path: str, query: dict[str, str],
                                            body: bytes, content_type: str, real_pid: bool) -> None:
    if real_pid:
        path = path.replace("/x", "/" + served.pid)
        query = {name: served.pid if name == "process-id" else value for name, value in query.items()}
    target = urllib.parse.quote(path, safe="/~@=&+:;,!$'()*-._") + (
        "?" + urllib.parse.urlencode(query) if query else "")
    status, answer = served.request(method, target, body if method in ("POST", "PUT") else None,
                                    {"Content-Type": content_type})
    assert status < 500, (method, target, status, answer[:300])
