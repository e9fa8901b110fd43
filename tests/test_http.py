"""AO's HTTP API on a real node: real uvicorn on 127.0.0.1, real signed data items, real LMDB."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from actorao import Node, ans104, examples
from actorao.http import HttpServer
from actorao.persist import SUBDATABASES

AO = [("Data-Protocol", "ao"), ("Variant", "ao.TN.1")]


class Reply:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status, self.body, self.headers = status, body, {k.lower(): v for k, v in headers.items()}

    def json(self) -> Any:
        return orjson.loads(self.body)


def call(url: str, method: str = "GET", body: bytes | None = None, content_type: str = "application/octet-stream"
         ) -> Reply:
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return Reply(response.status, response.read(), dict(response.headers))
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.read(), dict(exc.headers))


@pytest.fixture(scope="module")
def signer() -> ans104.RsaSigner:
    return ans104.RsaSigner.generate()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, str]]:
    with Node(tmp_path_factory.mktemp("http") / "node", workers=2) as node, \
            HttpServer(node, port=0, max_body=256 * 1024) as server:
        yield node, server.url


def module_item(signer: ans104.RsaSigner, name: str = "counter") -> ans104.DataItem:
    tags = [*AO, ("Type", "Module"), ("Module-Format", "wasm32-unknown-unknown"), ("Input-Encoding", "JSON-1"),
            ("Output-Encoding", "JSON-1")]
    return ans104.create_data_item(signer, examples.wasm(name), tags)


def process_item(signer: ans104.RsaSigner, module: str, scheduler: str, *extra: tuple[str, str]) -> ans104.DataItem:
    tags = [*AO, ("Type", "Process"), ("Module", module), ("Scheduler", scheduler), *extra]
    return ans104.create_data_item(signer, " ", tags, anchor=os.urandom(16).hex())


def message_item(signer: ans104.RsaSigner, pid: str, action: str = "Inc", data: str = " ") -> ans104.DataItem:
    return ans104.create_data_item(signer, data, [*AO, ("Type", "Message"), ("Action", action)], target=pid)


def cursor_doc(edge: dict[str, Any]) -> Any:
    """A results cursor, as aos reads it: base64 JSON {timestamp, ordinate, cron, sort}."""
    return orjson.loads(base64.b64decode(edge["cursor"]))


def ordinate(edge: dict[str, Any]) -> int:
    return int(cursor_doc(edge)["ordinate"])


def post(url: str, item: ans104.DataItem | bytes) -> Reply:
    return call(url + "/", "POST", item.to_bytes() if isinstance(item, ans104.DataItem) else item)


@pytest.fixture(scope="module")
def counter_process(served: tuple[Node, str], signer: ans104.RsaSigner) -> tuple[str, str]:
    """(module id, process id) of a counter spawned over HTTP."""
    node, url = served
    module = module_item(signer)
    assert post(url, module).json()["id"] == module.id
    process = process_item(signer, module.id, node.identity)
    reply = post(url, process)
    assert reply.status == 202 and reply.json()["id"] == process.id
    return module.id, process.id


def test_root_names_the_scheduler_and_the_time(served: tuple[Node, str]) -> None:
    node, url = served
    root = call(url + "/").json()
    assert root["address"] == node.identity and root["timestamp"] > 1_700_000_000_000
    assert set(call(url + "/timestamp").json()) == {"timestamp", "block_height"}


def test_gateway_answers_aoconnects_module_query(served: tuple[Node, str], signer: ans104.RsaSigner,
                                                 counter_process: tuple[str, str]) -> None:
    _, url = served
    module, _ = counter_process
    query = ("query GetTransactions ($transactionIds: [ID!]!) { transactions(ids: $transactionIds) { "
             "edges { node { owner { address } tags { name value } block { id height timestamp } } } } }")
    reply = call(url + "/graphql", "POST", orjson.dumps({"query": query, "variables": {"transactionIds": [module]}}),
                 "application/json").json()
    node_doc = reply["data"]["transactions"]["edges"][0]["node"]
    assert node_doc["owner"]["address"] == signer.address
    assert {"name": "Type", "value": "Module"} in node_doc["tags"]
    assert node_doc["block"]["height"] == 0 and node_doc["block"]["timestamp"] > 1_700_000_000
    unknown = {"query": query, "variables": {"transactionIds": ["x" * 43]}}
    missing = call(url + "/graphql", "POST", orjson.dumps(unknown), "application/json").json()
    assert missing["data"]["transactions"]["edges"] == []
    by_tag = ('{ transactions(tags: [{name: "Type", values: ["Scheduler-Location"]}]) '
              "{ edges { node { tags { name value } } } } }")
    location = call(url + "/graphql", "POST", orjson.dumps({"query": by_tag}), "application/json").json()
    tags = {t["name"]: t["value"] for t in location["data"]["transactions"]["edges"][0]["node"]["tags"]}
    assert tags["Url"] == url and tags["Time-To-Live"].isdigit()
    broken = call(url + "/graphql", "POST", orjson.dumps({"query": "{ transactions(ids: ["}), "application/json")
    assert broken.status == 200 and broken.json()["errors"][0]["message"].startswith("Syntax Error")
    aliases = "{ " + " ".join(f"a{i}: transactions {{ edges {{ cursor }} }}" for i in range(9)) + " }"
    many = call(url + "/graphql", "POST", orjson.dumps({"query": aliases}), "application/json").json()
    assert "at most 8" in many["errors"][0]["message"] and "data" not in many
    endless = "{ transactions(ids: [" + ", ".join(['"x"'] * 3000) + "]) { edges { cursor } } }"
    tokens = call(url + "/graphql", "POST", orjson.dumps({"query": endless}), "application/json").json()
    assert "tokens" in tokens["errors"][0]["message"]


def test_messages_results_and_the_log_over_http(served: tuple[Node, str], signer: ans104.RsaSigner,
                                                counter_process: tuple[str, str]) -> None:
    node, url = served
    module, pid = counter_process
    items = [message_item(signer, pid) for _ in range(3)]
    acks = [post(url, item) for item in items]
    assert [a.status for a in acks] == [202] * 3
    slots = [a.json()["slot"] for a in acks]
    assert slots == sorted(slots) and len(set(slots)) == 3
    last = call(f"{url}/result/{items[-1].id}?process-id={pid}").json()
    assert last["Output"] == str(slots[-1]) and last["Messages"] == []

    page = call(f"{url}/results/{pid}?sort=ASC&limit=25").json()
    assert not page["pageInfo"]["hasNextPage"]
    assert [ordinate(edge) for edge in page["edges"]] == list(range(slots[-1] + 1))
    assert page["edges"][-1]["node"] == {"Messages": [], "Assignments": [], "Spawns": [], "Output": str(slots[-1])}
    newest = call(f"{url}/results/{pid}?sort=DESC&limit=2").json()
    assert [ordinate(edge) for edge in newest["edges"]] == [slots[-1], slots[-2]] and newest["pageInfo"]["hasNextPage"]
    start, end = page["edges"][slots[0]]["cursor"], page["edges"][slots[1]]["cursor"]
    window = call(f"{url}/results/{pid}?from={start}&to={end}").json()["edges"]
    assert [ordinate(edge) for edge in window] == [slots[1]]

    log = call(f"{url}/{pid}?limit=100").json()
    assert not log["page_info"]["has_next_page"]
    nodes = [edge["node"] for edge in log["edges"]]
    assert [n["message"]["id"] for n in nodes[-3:]] == [item.id for item in items]
    assert all(n["message"]["owner"]["address"] == signer.address for n in nodes)
    assert nodes[-1]["message"]["signature"] == ans104.encode_id(items[-1].signature)
    nonces = [{t["name"]: t["value"] for t in n["assignment"]["tags"]}["Nonce"] for n in nodes]
    assert nonces == [str(slot) for slot in range(len(nodes))]
    first_page = call(f"{url}/{pid}?from-nonce=-1&limit=1").json()
    assert first_page["page_info"]["has_next_page"] and len(first_page["edges"]) == 1

    one = call(f"{url}/{items[0].id}?process-id={pid}").json()
    assert one["message"]["id"] == items[0].id and one["message"]["target"] == pid
    latest = call(f"{url}/{pid}/latest").json()
    assert latest["message"]["id"] == items[-1].id
    spawn = call(f"{url}/processes/{pid}").json()
    assert spawn["process_id"] == pid and {"name": "Module", "value": module} in spawn["tags"]
    assert spawn["owner"]["address"] == signer.address

    again = post(url, items[0])  # the same signed item again: assigned once, acknowledged again
    assert again.status == 202 and again.json()["slot"] == slots[0]
    assert node._logs.last_slot(pid) == slots[-1]


def test_dry_run_state_and_assign(served: tuple[Node, str], signer: ans104.RsaSigner,
                                  counter_process: tuple[str, str]) -> None:
    node, url = served
    module, pid = counter_process
    item = message_item(signer, pid)
    slot = post(url, item).json()["slot"]
    before = node._logs.last_slot(pid)
    body = {"Id": "1234", "Owner": "1234", "Target": pid, "Data": "", "Tags": [{"name": "Action", "value": "Inc"}]}
    dry = call(f"{url}/dry-run?process-id={pid}", "POST", orjson.dumps(body), "application/json").json()
    assert dry["Output"] == str(slot + 1)
    assert node._logs.last_slot(pid) == before  # nothing persisted
    assert call(f"{url}/result/{item.id}?process-id={pid}").json()["Output"] == str(slot)

    state = call(f"{url}/state/{pid}")
    assert state.status == 200 and state.headers["content-type"] == "application/octet-stream"
    assert state.headers["last-ordinate"] == str(before)
    assert hashlib.sha256(state.body).digest() == hashlib.sha256(node.state(pid).memory).digest()

    other = post(url, process_item(signer, module, node.identity)).json()["id"]
    assigned = call(f"{url}/?process-id={other}&assign={item.id}", "POST", b"")
    assert assigned.status == 202 and assigned.json()["slot"] == 1
    assert call(f"{url}/result/{item.id}?process-id={other}").json()["Output"] == "1"
    assert call(f"{url}/result/{item.id}?process-id={pid}").json()["Output"] == str(slot)
    # assigning a message to its own target again is the message itself: no second evaluation
    log_before = node._logs.last_slot(pid)
    again = call(f"{url}/?process-id={pid}&assign={item.id}", "POST", b"")
    assert again.status == 202 and again.json()["slot"] == slot
    spawn_again = call(f"{url}/?process-id={other}&assign={other}", "POST", b"")
    assert spawn_again.status == 202 and spawn_again.json()["slot"] == 0
    assert node._logs.last_slot(pid) == log_before


def test_monitor_is_acknowledged_for_a_cron_process(served: tuple[Node, str], signer: ans104.RsaSigner,
                                                     counter_process: tuple[str, str]) -> None:
    node, url = served
    module, plain = counter_process
    ticking = post(url, process_item(signer, module, node.identity, ("Cron-Interval", "1-hour"))).json()["id"]
    monitor = ans104.create_data_item(signer, " ", [], target=ticking)
    reply = call(f"{url}/monitor/{ticking}", "POST", monitor.to_bytes())
    assert reply.status == 200 and "1-hour" in reply.json()["message"]
    assert call(f"{url}/monitor/{ticking}", "DELETE", monitor.to_bytes()).status == 200
    no_cron = call(f"{url}/monitor/{plain}", "POST", ans104.create_data_item(signer, " ", [], target=plain).to_bytes())
    assert no_cron.status == 400 and no_cron.json()["field"] == "Tags['Cron-Interval']"
    elsewhere = call(f"{url}/monitor/{plain}", "POST", monitor.to_bytes())
    assert elsewhere.status == 400 and elsewhere.json()["field"] == "Target"
    bent = monitor.to_bytes()[:10] + bytes([monitor.to_bytes()[10] ^ 1]) + monitor.to_bytes()[11:]
    assert call(f"{url}/monitor/{ticking}", "POST", bent).status == 401


def _store_snapshot(node: Node) -> str:
    digest = hashlib.sha256()

    for store in node._logs.stores:  # every shard's, the node's own first

        def body(txn: Any, store: Any = store) -> None:
            for name in SUBDATABASES:
                for key, value in txn.cursor(db=store.db[name]):
                    digest.update(bytes(key) + b"=" + bytes(value))

        store.read(body)
    return digest.hexdigest()


def test_bad_input_gets_its_status_and_changes_nothing(served: tuple[Node, str], signer: ans104.RsaSigner,
                                                       counter_process: tuple[str, str]) -> None:
    node, url = served
    module, pid = counter_process
    node.catch_up(pid)
    before = _store_snapshot(node)
    good = message_item(signer, pid).to_bytes()
    tampered_data = good[:-1] + b"X"
    tampered_signature = good[:10] + bytes([good[10] ^ 1]) + good[11:]
    other = ans104.RsaSigner.generate()
    forged = ans104.DataItem.parse(good)
    forged_bytes = forged.to_bytes()[:2] + forged.signature + other.owner + forged.to_bytes()[2 + 1024:]
    ghost = "G" * 43
    cases: list[tuple[str, Reply, int, str | None]] = [
        ("garbage", post(url, b"not a data item at all"), 400, "signature type"),
        ("truncated", post(url, good[:700]), 400, "data item"),
        ("empty", post(url, b""), 400, "body"),
        ("tampered data", post(url, tampered_data), 401, None),
        ("tampered signature", post(url, tampered_signature), 401, None),
        ("someone else's owner", post(url, forged_bytes), 401, None),
        ("unknown process", post(url, message_item(signer, ghost)), 404, None),
        ("no target", post(url, ans104.create_data_item(signer, " ", [*AO, ("Type", "Message")])), 400, "Target"),
        ("unknown module", post(url, process_item(signer, ghost, node.identity)), 400, "Tags['Module']"),
        ("other scheduler", post(url, process_item(signer, module, ghost)), 400, "Tags['Scheduler']"),
        ("other type", post(url, ans104.create_data_item(signer, "x", [*AO, ("Type", "Note")])), 400, "Tags['Type']"),
        ("binary data", post(url, ans104.create_data_item(signer, b"\xff\xfe", [*AO, ("Type", "Message")],
                                                          target=pid)), 400, "Data"),
        ("pushed tag", post(url, ans104.create_data_item(signer, " ", [*AO, ("Type", "Message"), ("From-Process", pid)],
                                                         target=pid)), 400, "Tags['From-Process']"),
        ("oversized", post(url, b"\x01\x00" + b"\x00" * (256 * 1024)), 413, None),
        ("bad module", post(url, ans104.create_data_item(signer, b"\x00asm junk", [*AO, ("Type", "Module")])), 422,
         None),
        ("unknown message", call(f"{url}/result/{ghost}?process-id={pid}"), 404, None),
        ("unknown results", call(f"{url}/results/{ghost}"), 404, None),
        ("bad sort", call(f"{url}/results/{pid}?sort=UP"), 400, "sort"),
        ("bad limit", call(f"{url}/results/{pid}?limit=-1"), 400, "limit"),
        ("unicode digit", call(f"{url}/{pid}?from=%C2%B2"), 400, "from"),
        ("huge number", call(f"{url}/{pid}?from=" + "9" * 5000), 400, "from"),
        ("dry-run tags not a list", call(f"{url}/dry-run?process-id={pid}", "POST", orjson.dumps({"Tags": 5}),
                                         "application/json"), 400, "Tags"),
        ("process with a pushed tag", post(url, process_item(signer, module, node.identity, ("Pushed-For", pid))),
         400, "Tags['Pushed-For']"),
        ("process over the fuel ceiling", post(url, process_item(
            signer, module, node.identity, ("Compute-Limit", str(node.config.max_compute_limit + 1)))),
         400, "Tags['Compute-Limit']"),
        ("process over the memory ceiling", post(url, process_item(signer, module, node.identity,
                                                                   ("Memory-Limit", "512-gb"))),
         400, "Tags['Memory-Limit']"),
        ("process with a target", post(url, ans104.create_data_item(
            signer, " ", [*AO, ("Type", "Process"), ("Module", module), ("Scheduler", node.identity)], target=pid)),
         400, "Target"),
        ("graphql too big", call(f"{url}/graphql", "POST", b"{" + b" " * (300 * 1024) + b"}", "application/json"),
         413, None),
        ("bad id", call(f"{url}/state/short"), 400, "pid"),
        ("dry-run not JSON", call(f"{url}/dry-run?process-id={pid}", "POST", b"{", "application/json"), 400, "body"),
        ("dry-run other target", call(f"{url}/dry-run?process-id={pid}", "POST", orjson.dumps({"Target": ghost}),
                                      "application/json"), 400, "Target"),
        ("assign unknown", call(f"{url}/?process-id={pid}&assign={ghost}", "POST", b""), 404, None),
        ("no route", call(f"{url}/a/b/c"), 404, None),
        ("wrong method", call(f"{url}/timestamp", "DELETE"), 405, None),
    ]
    for name, reply, status, field in cases:
        assert reply.status == status, (name, reply.status, reply.body)
        doc = reply.json()
        assert doc["error"] and b"Traceback" not in reply.body, name
        if field is not None:
            assert doc.get("field") == field, (name, doc)
    assert _store_snapshot(node) == before
    # and the node still serves
    item = message_item(signer, pid)
    assert post(url, item).status == 202
    assert call(f"{url}/result/{item.id}?process-id={pid}").json()["Output"].isdigit()


def test_signature_checks_can_be_turned_off(tmp_path: Path, signer: ans104.RsaSigner) -> None:
    with Node(tmp_path / "node", workers=1) as node, HttpServer(node, port=0, verify=False) as server:
        module = module_item(signer)
        post(server.url, module)
        raw = process_item(signer, module.id, node.identity).to_bytes()
        bent = raw[:10] + bytes([raw[10] ^ 1]) + raw[11:]  # a signature no one made: accepted, unverified
        assert post(server.url, bent).status == 202


def test_overload_and_a_stopped_node_answer_503_with_retry_after(tmp_path: Path, signer: ans104.RsaSigner) -> None:
    node = Node(tmp_path / "node", workers=1, max_pending=1)
    server = HttpServer(node, port=0).start()
    try:
        module = module_item(signer)
        post(server.url, module)
        pid = post(server.url, process_item(signer, module.id, node.identity)).json()["id"]
        accepted: list[str] = []
        refused = 0
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            for _ in range(10):  # bounded: until the SU's bound has been hit at least once
                items = [message_item(signer, pid) for _ in range(64)]
                for item, reply in zip(items, pool.map(lambda i: post(server.url, i), items), strict=True):
                    if reply.status == 202:
                        accepted.append(item.id)
                    else:
                        assert reply.status == 503 and reply.headers["retry-after"] == "1", reply.body
                        refused += 1
                if refused:
                    break
        assert refused > 0 and accepted
        results = node.results(accepted, timeout=60)  # every acknowledged message was kept and evaluated
        assert len({r.output for r in results}) == len(accepted)  # each counted once
        node.close()
        stopped = call(server.url + f"/result/{accepted[0]}?process-id={pid}")
        assert stopped.status == 503 and stopped.headers["retry-after"] == "1"
        assert "closed" in stopped.json()["error"]
    finally:
        server.stop()
        node.close()


def test_cli_talks_to_a_running_node(served: tuple[Node, str], tmp_path: Path) -> None:
    node, url = served
    env = {**os.environ, "ACTORAO_URL": url, "ACTORAO_WALLET": str(tmp_path / "wallet.json")}
    wasm = tmp_path / "counter.wasm"
    wasm.write_bytes(examples.wasm("counter"))

    def actorao(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "actorao.cli", *args], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    module = orjson.loads(actorao("module", "add", str(wasm)))["id"]  # its format recognised, as the tour does it
    tags = {tag["name"]: tag["value"] for tag in node.module_info(module)["tags"]}
    assert tags["Module-Format"] == "wasm32-unknown-unknown" and tags["Memory-Limit"] == "1-gb"
    assert tags["Compute-Limit"] == str(node.config.compute_limit) and tags["Input-Encoding"] == "JSON-1"
    assert (tmp_path / "wallet.json").stat().st_mode & 0o777 == 0o600
    (tmp_path / "model.bin").write_bytes(bytes(range(256)) * 4)
    data = orjson.loads(actorao("data", "add", str(tmp_path / "model.bin"), "--tag", "Content-Type=x"))["id"]
    assert node._store.data_range(data, 250, 10) == bytes([250, 251, 252, 253, 254, 255, 0, 1, 2, 3])
    assert orjson.loads(node._store.data_meta(data) or b"{}")["size"] == 1024
    pid = orjson.loads(actorao("spawn", module, "--tag", "Name=cli"))["id"]
    sent = actorao("send", pid, "--action", "Inc", "--wait")
    assert '"Output": "1"' in sent
    message = orjson.loads(sent.split("\n}\n")[0] + "}")["id"]
    assert orjson.loads(actorao("result", message))["Output"] == "1"
    assert orjson.loads(actorao("dry-run", pid, "--action", "Inc"))["Output"] == "2"
    assert "after slot 1" in actorao("state", pid, "-o", str(tmp_path / "state.bin"))
    assert (tmp_path / "state.bin").stat().st_size == len(node.state(pid).memory)
    log = orjson.loads(actorao("log", pid))
    assert [edge["cursor"] for edge in log["edges"]] == ["0", "1"]  # by nonce, from the spawn
    tree = orjson.loads(actorao("tree"))
    assert tree["id"] == "node" and tree["state"] == "running"
    bad = subprocess.run([sys.executable, "-m", "actorao.cli", "send", "G" * 43, "--action", "Inc"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "404" in bad.stderr and "Traceback" not in bad.stderr


class SteppedClock:
    """The SU's clock, set by the test: a burst of messages in one millisecond, as a busy SU stamps it."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def test_paging_follows_ao_units(tmp_path: Path) -> None:
    clock = SteppedClock(1_700_000_000_000)
    with Node(tmp_path / "node", workers=1, clock=clock) as node, HttpServer(node, port=0) as server:
        url = server.url
        pid = node.spawn(examples.wasm("trapper"), {"Name": "paged"})  # slot 0 at T0
        stamps = [clock.ms]
        for step, actions in ((1, ["Inc", "Trap", "Inc"]), (2, ["Inc"]), (3, ["Inc"])):
            clock.ms = 1_700_000_000_000 + step
            acks = [node.send(pid, {"Action": action}) for action in actions]
            stamps += [ack.timestamp for ack in acks]
        node.catch_up(pid)
        t0, t1, t2, t3 = (1_700_000_000_000 + step for step in range(4))
        assert stamps == [t0, t1, t1, t1, t2, t3]

        def log(query: str) -> tuple[list[int], list[str], bool]:
            page = call(f"{url}/{pid}?{query}").json()
            nonces = [int({t["name"]: t["value"] for t in e["node"]["assignment"]["tags"]}["Nonce"])
                      for e in page["edges"]]
            return nonces, [e["cursor"] for e in page["edges"]], page["page_info"]["has_next_page"]

        # ao's SU: by timestamp, `from` exclusive and `to` inclusive, the cursor a timestamp ...
        assert log("limit=100") == ([0, 1, 2, 3, 4, 5], [str(t) for t in stamps], False)
        assert log(f"from={t1}") == ([4, 5], [str(t2), str(t3)], False)
        assert log(f"to={t1}") == ([0, 1, 2, 3], [str(t0)] + [str(t1)] * 3, False)
        assert log(f"from={t0 - 1}&limit=1") == ([1, 2, 3], [str(t1)] * 3, True)  # the spawn: first pages only
        # ... and a page never splits the run of slots 1-3 (one millisecond), or the next `from` would skip its rest
        assert log("limit=2") == ([0], [str(t0)], True)
        assert log(f"from={t0}&limit=2") == ([1, 2, 3], [str(t1)] * 3, True)
        seen, start = [], ""
        while True:
            nonces, cursors, more = log(f"limit=1{start}")
            seen += nonces
            if not more:
                break
            start = f"&from={cursors[-1]}"
        assert seen == [0, 1, 2, 3, 4, 5]
        # by nonce with from-nonce/to-nonce, the cursor a nonce; -1 starts at the process
        assert log("from-nonce=2&to-nonce=4") == ([3, 4], ["3", "4"], False)
        assert log("from-nonce=-1&limit=2") == ([0, 1], ["0", "1"], True)

        def results(query: str) -> tuple[list[int], list[str], bool]:
            page = call(f"{url}/results/{pid}?{query}").json()
            return [ordinate(e) for e in page["edges"]], [e["cursor"] for e in page["edges"]], \
                page["pageInfo"]["hasNextPage"]

        # ao's CU: the Error of slot 2 is left out; cursors are base64 JSON {timestamp, ordinate, sort}
        everything, cursors, more = results("")
        assert everything == [0, 1, 3, 4, 5] and not more
        assert base64.b64decode(cursors[1]) == b'{"timestamp":%d,"ordinate":"1","sort":"ASC"}' % t1
        assert results(f"from={cursors[1]}")[0] == [3, 4, 5]  # a cursor: exclusive
        assert results(f"from={cursors[1]}&to={cursors[3]}")[0] == [3, 4]
        assert results(f"from={t1}")[0] == [1, 3, 4, 5]  # a timestamp: inclusive at both ends, as ao compares
        assert results(f"to={t1}")[0] == [0, 1, 3]
        assert results(f"to={t0 - 1}")[0] == []
        newest, newest_cursors, more = results("sort=DESC&limit=2")
        assert newest == [5, 4] and more and cursor_doc({"cursor": newest_cursors[1]})["sort"] == "DESC"
        assert results(f"from={newest_cursors[1]}")[0] == [5]  # the cursor's sort wins, DESC
        assert results("limit=2")[2] is True
        bad = call(f"{url}/results/{pid}?from=not-a-cursor!")
        assert bad.status == 400 and bad.json()["field"] == "from"
        bad_sort = call(f"{url}/results/{pid}?from=" + base64.b64encode(b'{"ordinate":"1","sort":"UP"}').decode())
        assert bad_sort.status == 400 and "sort" in bad_sort.json()["error"]
        assert call(f"{url}/{pid}?from-nonce=x").json()["field"] == "from-nonce"


def test_gateway_blocks_date_modules_and_processes(tmp_path: Path, signer: ans104.RsaSigner) -> None:
    clock = SteppedClock(1_700_000_000_000)
    with Node(tmp_path / "node", workers=1, clock=clock) as node, HttpServer(node, port=0) as server:
        older = module_item(signer, "counter")
        assert post(server.url, older).status == 202
        clock.ms += 5000
        newer = module_item(signer, "echo")
        assert post(server.url, newer).status == 202
        clock.ms += 5000
        pid = post(server.url, process_item(signer, newer.id, node.identity)).json()["id"]
        # aos's module query: the newest module first, each with a block to show its date by
        query = ('query ($sort: SortOrder) { transactions(tags: [{name: "Type", values: ["Module"]}], sort: $sort) '
                 "{ edges { node { id block { height timestamp } } } } }")

        def modules(sort: str) -> list[tuple[str, int, int]]:
            reply = call(server.url + "/graphql", "POST", orjson.dumps({"query": query, "variables": {"sort": sort}}),
                         "application/json").json()
            return [(e["node"]["id"], e["node"]["block"]["height"], e["node"]["block"]["timestamp"])
                    for e in reply["data"]["transactions"]["edges"]]

        assert modules("HEIGHT_DESC") == [(newer.id, 0, 1_700_000_005), (older.id, 0, 1_700_000_000)]
        assert modules("HEIGHT_ASC") == [(older.id, 0, 1_700_000_000), (newer.id, 0, 1_700_000_005)]
        by_id = '{ transaction(id: "' + pid + '") { block { id height timestamp previous } ingested_at } }'
        process = call(server.url + "/graphql", "POST", orjson.dumps({"query": by_id}), "application/json").json()
        block = process["data"]["transaction"]["block"]
        assert (block["height"], block["timestamp"]) == (0, 1_700_000_010) and len(block["id"]) == 43
        assert process["data"]["transaction"]["ingested_at"] == 1_700_000_010


def test_a_module_reads_a_signed_message_as_ao_cus_hand_it(served: tuple[Node, str], signer: ans104.RsaSigner) -> None:
    node, url = served
    module = module_item(signer, "echo")
    post(url, module)
    pid = post(url, process_item(signer, module.id, node.identity)).json()["id"]
    item = message_item(signer, pid, "Say", "hi")
    assert post(url, item).status == 202
    seen = call(f"{url}/result/{item.id}?process-id={pid}").json()["Output"]
    assert list(seen) == ["Id", "Signature", "Data", "Owner", "Target", "Anchor", "From", "Tags", "Epoch", "Nonce",
                          "Timestamp", "Block-Height", "Hash-Chain", "Cron", "Read-Only"]
    assert seen["Signature"] == ans104.encode_id(item.signature) and seen["Owner"] == signer.address
    assert seen["Anchor"] is None and seen["Data"] == "hi" and seen["Nonce"] == 1


def test_ao_core_paths_check_what_is_signed(served: tuple[Node, str], signer: ans104.RsaSigner,
                                            counter_process: tuple[str, str]) -> None:
    node, url = served
    module, pid = counter_process
    address = call(f"{url}/~meta@1.0/info/address")
    assert address.status == 200 and address.body.decode() == node.identity
    mainnet = [("Data-Protocol", "ao"), ("Variant", "ao.N.1")]
    item = ans104.create_data_item(signer, "1984", [*mainnet, ("Type", "Message"), ("Action", "Inc")], target=pid)
    pushed = call(f"{url}/{pid}~process@1.0/push", "POST", item.to_bytes(), "application/ans104")
    slot = pushed.json()["slot"]
    assert pushed.status == 200 and pushed.json()["id"] == item.id and pushed.headers["slot"] == str(slot)
    result = call(f"{url}/{pid}~process@1.0/compute/results={slot}", "POST", item.to_bytes(), "application/ans104")
    assert result.json()["raw"]["Output"] == str(slot)
    assert call(f"{url}/{pid}/slot/current", "POST", b"").body.decode() == str(node._logs.last_slot(pid))
    ask = ans104.create_data_item(signer, "", [*mainnet, ("Type", "Message")], target=pid)
    dry = call(f"{url}/{pid}~process@1.0/as=execution/compute&Action=Inc", "POST", ask.to_bytes())
    assert dry.json()["raw"]["Output"] == str(node._logs.last_slot(pid) + 1)
    spawn = ans104.create_data_item(signer, "1984", [*mainnet, ("Type", "Process"), ("Module", module),
                                                     ("Scheduler", node.identity)], anchor=os.urandom(16).hex())
    spawned = call(f"{url}/push", "POST", spawn.to_bytes(), "application/ans104")
    assert spawned.status == 200 and spawned.headers["process"] == spawn.id

    for process in (pid, spawn.id):
        node.catch_up(process)
    before = _store_snapshot(node)
    raw = item.to_bytes()
    bent = raw[:10] + bytes([raw[10] ^ 1]) + raw[11:]
    other = ans104.create_data_item(signer, " ", [*mainnet, ("Type", "Message")], target=spawn.id)
    cases: list[tuple[str, Reply, int, str | None]] = [
        ("bad signature", call(f"{url}/{pid}~process@1.0/push", "POST", bent), 401, None),
        ("bad signature, dry-run", call(f"{url}/{pid}~process@1.0/as=execution/compute&A=B", "POST", bent), 401, None),
        ("no body", call(f"{url}/{pid}~process@1.0/push", "POST", b""), 400, "body"),
        ("other target", call(f"{url}/{pid}~process@1.0/push", "POST", other.to_bytes()), 400, "Target"),
        ("a message to /push", call(f"{url}/push", "POST", item.to_bytes()), 400, "Tags['Type']"),
        ("no such slot", call(f"{url}/{pid}/compute/results=99999"), 404, None),
        ("bad slot", call(f"{url}/{pid}/compute/results=x"), 400, "results"),
        ("bad dry-run tag", call(f"{url}/{pid}~process@1.0/as=execution/compute&oops", "POST", raw), 400, "path"),
    ]
    for name, reply, status, field in cases:
        assert reply.status == status, (name, reply.status, reply.body)
        if field is not None:
            assert reply.json().get("field") == field, (name, reply.json())
    assert _store_snapshot(node) == before
