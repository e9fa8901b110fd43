"""The dashboard and /metrics on a real node over real HTTP on 127.0.0.1: Prometheus' parser reads
the node's own counters, the sampler's rates follow its injected clock, the admin gate refuses
without the token, and the process and bench pages show what was sent and run."""

from __future__ import annotations

import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from actorao import Node, examples
from actorao.dashboard import Sampler
from actorao.http import HttpServer

COUNTERS = {"actorao_assignments": "assigned", "actorao_evaluations": "evaluated", "actorao_commits": "commits",
            "actorao_worker_restarts": "restarts"}


class Reply:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status, self.body, self.headers = status, body, {k.lower(): v for k, v in headers.items()}

    def json(self) -> Any:
        return orjson.loads(self.body)


def call(url: str, headers: dict[str, str] | None = None) -> Reply:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return Reply(response.status, response.read(), dict(response.headers))
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.read(), dict(exc.headers))


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def scrape(url: str, headers: dict[str, str] | None = None) -> dict[str, float]:
    """Every sample of /metrics by name and labels, e.g. ``actorao_assignments_total``."""
    reply = call(url + "/metrics", headers)
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"].startswith("text/plain")
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, str, Path]]:
    bench = tmp_path_factory.mktemp("bench-results")
    with Node(tmp_path_factory.mktemp("dash") / "node", workers=2, schedulers=2, checkpoint_every=50) as node, \
            HttpServer(node, port=0, bench_dir=str(bench)) as server:
        yield node, server.url, bench


def test_metrics_parse_and_equal_the_nodes_counters_under_load(served: tuple[Node, str, Path]) -> None:
    node, url, _ = served
    pids = [node.spawn(examples.wasm("counter"), {"Name": f"metered-{i}"}) for i in range(4)]
    batches, size = 20, 200
    acks: list[Any] = []
    done = threading.Event()

    def load() -> None:
        try:
            for round_ in range(batches):
                acks.extend(node.send_many([(pids[(round_ + i) % 4], {"Action": "Inc"}, "") for i in range(size)]))
        finally:
            done.set()

    start = node.status()
    sender = threading.Thread(target=load, name="load")
    sender.start()
    scrapes = 0
    while not done.is_set() or scrapes < 2:
        before = node.status()
        metrics = scrape(url)
        after = node.status()
        for name, key in COUNTERS.items():
            assert before[key] <= metrics[f"{name}_total"] <= after[key], (name, before[key], after[key])
        scrapes += 1
    sender.join(60)
    node.results(acks, timeout=120)
    assert len(acks) == batches * size
    wait_for(lambda: node.status()["evaluated"] >= start["evaluated"] + batches * size, "every evaluation")
    # Quiet now: every counter equals the node's, and /actorao/status says the same.
    metrics, status = scrape(url), node.status()
    over_http = call(url + "/actorao/status").json()
    for name, key in COUNTERS.items():
        assert metrics[f"{name}_total"] == status[key] == over_http[key], name
    assert metrics["actorao_processes"] == status["processes"] >= 4
    assert metrics["actorao_workers_running"] == 2
    assert metrics["actorao_unevaluated"] == status["assigned"] - status["evaluated"]
    assert metrics["actorao_checkpoints"] >= 4  # 50 messages between checkpoints, 1000 a process
    assert metrics["actorao_checkpoint_bytes"] > 0
    for worker in node.worker_processes():
        labels = f"child={worker['id']},pid={worker['pid']}"
        assert metrics[f"actorao_os_process_cpu_seconds_total{{{labels}}}"] > 0
        assert metrics[f"actorao_os_process_resident_bytes{{{labels}}}"] > 10 * 1024 * 1024
    # Latency is timed by the sampler, which the first scrape started: the load's results were seen.
    wait_for(lambda: scrape(url).get("actorao_result_latency_seconds_count", 0) > 0, "a timed result")
    # HTTP statuses, a 404 among them.
    assert call(url + "/dashboard/api/processes/" + "x" * 43).status == 404
    metrics = scrape(url)
    assert metrics["actorao_http_responses_total{method=GET,status=200}"] >= scrapes
    assert metrics["actorao_http_responses_total{method=GET,status=404}"] >= 1


def test_sampler_rates_follow_its_clock(served: tuple[Node, str, Path]) -> None:
    node, _, _ = served
    now = [1000.0]
    sampler = Sampler(node, interval=1.0, clock=lambda: now[0])
    pid = node.spawn(examples.wasm("counter"), {"Name": "sampled"})
    node.catch_up(pid)
    first = sampler.sample_now()
    acks = node.send_many([(pid, {"Action": "Inc"}, "")] * 100)
    node.results(acks, timeout=60)
    wait_for(lambda: node.status()["evaluated"] >= first["evaluated"] + 100, "the results to be counted")
    now[0] += 4.0
    second = sampler.sample_now()
    assert second["seq"] == first["seq"] + 1 and second["time"] - first["time"] == 4.0
    assert second["assigned_per_s"] == round((second["assigned"] - first["assigned"]) / 4, 1)
    assert second["evaluated_per_s"] == round((second["evaluated"] - first["evaluated"]) / 4, 1)
    assert second["assigned"] - first["assigned"] >= 100
    hosted = sum(worker["processes"] for worker in second["workers"])
    assert hosted == second["processes"]
    assert [worker["id"] for worker in second["workers"]] == ["worker-0", "worker-1"]
    assert all(worker["rss"] > 0 for worker in second["workers"])
    assert [sample["seq"] for sample in sampler.history()] == [first["seq"], second["seq"]]
    assert sampler.after(second["seq"], 0.0) is None
    with pytest.raises(ValueError, match="interval must be positive"):
        Sampler(node, interval=0)


def test_process_pages_show_the_log_with_tags_and_data(served: tuple[Node, str, Path]) -> None:
    node, url, _ = served
    pid = node.spawn(examples.wasm("counter"), {"Name": "paged-one"})
    acks = [node.send(pid, {"Action": "Inc", "Note": f"n{i}"}, f"hello {i}") for i in range(30)]
    node.results(acks, timeout=60)
    found = call(url + "/dashboard/api/processes?q=paged-one").json()
    assert found["total"] == 1 and found["processes"][0]["id"] == pid
    assert found["processes"][0]["name"] == "paged-one" and found["processes"][0]["worker"].startswith("worker-")
    by_module = call(url + "/dashboard/api/processes?q=" + found["processes"][0]["module"][:10]).json()
    assert pid in [p["id"] for p in by_module["processes"]]
    info = call(url + f"/dashboard/api/processes/{pid}").json()
    assert info["head_slot"] == 30 and info["name"] == "paged-one"
    assert info["latest_results"][0]["slot"] == 30 and info["latest_results"][0]["output"] == "30"
    page = call(url + f"/dashboard/api/processes/{pid}/log?after=0&limit=20").json()
    assert page["more"] is True and [e["slot"] for e in page["entries"]] == list(range(1, 21))
    first = page["entries"][0]
    assert first["id"] == acks[0].id and first["data"] == "hello 0" and ["Note", "n0"] in first["tags"]
    rest = call(url + f"/dashboard/api/processes/{pid}/log?after=20&limit=20").json()
    assert rest["more"] is False and rest["entries"][-1]["slot"] == 30
    memory = call(url + f"/dashboard/api/processes/{pid}/memory").json()
    assert memory["bytes"] >= 65536 and memory["slot"] == 30
    bad = call(url + f"/dashboard/api/processes/{pid}/log?limit=zero")
    assert bad.status == 400 and bad.json()["field"] == "limit" and "zero" in bad.json()["error"]
    assert call(url + "/dashboard/api/processes/not-an-id").status == 404
    messenger = call(url + "/dashboard/api/messenger").json()
    assert messenger["backlog"] >= 0 and messenger["undelivered"] == len(messenger["undelivered_messages"])


def test_bench_runs_are_listed_and_served(served: tuple[Node, str, Path]) -> None:
    _, url, bench = served
    for run in ("20260101T000000Z", "20260102T000000Z"):
        (bench / run).mkdir()
        (bench / run / "report.md").write_text(f"# run {run}\n")
        (bench / run / "throughput.png").write_bytes(b"\x89PNG\r\n\x1a\n" + run.encode())
    runs = call(url + "/dashboard/api/bench").json()["runs"]
    assert [r["run"] for r in runs] == ["20260102T000000Z", "20260101T000000Z"]
    assert runs[0]["files"] == ["report.md", "throughput.png"]
    report = call(url + "/dashboard/bench/20260101T000000Z/report.md")
    assert report.status == 200 and report.body == b"# run 20260101T000000Z\n"
    plot = call(url + "/dashboard/bench/20260102T000000Z/throughput.png")
    assert plot.headers["content-type"] == "image/png" and plot.body.endswith(b"20260102T000000Z")
    assert call(url + "/dashboard/bench/20260101T000000Z/..%2F..%2Fsecret.md").status == 404
    assert call(url + "/dashboard/bench/nope/report.md").status == 404


def test_the_page_and_its_files_are_served(served: tuple[Node, str, Path]) -> None:
    _, url, _ = served
    page = call(url + "/dashboard")
    assert page.status == 200 and b"/dashboard/static/dashboard.js" in page.body
    assert call(url + "/dashboard/static/dashboard.js").headers["content-type"].startswith("text/javascript")
    assert call(url + "/dashboard/static/secrets.txt").status == 404
    assert b"http" not in page.body.split(b"<body>")[1].replace(b"http-equiv", b"")  # nothing from elsewhere


def _events(url: str, headers: dict[str, str], count: int) -> list[dict[str, Any]]:
    """The first ``count`` samples of the event stream."""
    request = urllib.request.Request(url + "/dashboard/events", headers=headers)
    found: list[dict[str, Any]] = []
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response:
            if line.startswith(b"data: "):
                found.append(orjson.loads(line[len(b"data: "):]))
                if len(found) == count:
                    return found
    raise AssertionError("the event stream ended early")


def test_events_stream_live_samples(served: tuple[Node, str, Path]) -> None:
    node, url, _ = served
    samples = _events(url, {}, 2)
    assert samples[1]["seq"] > samples[0]["seq"]
    assert samples[1]["assigned"] <= node.status()["assigned"]
    assert samples[1]["tree"]["children"]


def test_a_non_loopback_bind_needs_the_admin_token(tmp_path: Path) -> None:
    token = "not-so-secret-7f3a"
    # Bound to every address, reached only on 127.0.0.1.
    with Node(tmp_path / "guarded", workers=1, schedulers=1, admin_token=token) as node, \
            HttpServer(node, host="0.0.0.0", port=0) as server:
        url = server.url
        assert url.startswith("http://127.0.0.1:")
        for path in ("/metrics", "/dashboard", "/dashboard/api/processes", "/dashboard/events"):
            refused = call(url + path)
            assert refused.status == 401, path
            assert "admin token" in refused.json()["error"] and refused.headers["www-authenticate"] == "Bearer"
        wrong = call(url + "/metrics", {"Authorization": "Bearer guess"})
        assert wrong.status == 401 and wrong.json()["error"] == "the admin token is wrong"
        assert call(url + "/").status == 200  # AO's API is not the gate's
        metrics = scrape(url, {"Authorization": f"Bearer {token}"})
        assert metrics["actorao_workers_running"] == 1
        page = call(url + f"/dashboard?token={token}")
        assert page.status == 200 and "httponly" in page.headers["set-cookie"].lower()
        cookie = page.headers["set-cookie"].split(";")[0]
        assert call(url + "/dashboard/api/processes", {"Cookie": cookie}).status == 200
        for path in ("/dashboard", "/dashboard/api/history", "/actorao/status"):
            assert token.encode() not in call(url + path, {"Cookie": cookie}).body, path
        assert token not in repr(node.config)
    with Node(tmp_path / "open", workers=1, schedulers=1) as node, \
            HttpServer(node, host="0.0.0.0", port=0) as server:
        off = call(server.url + "/metrics")
        assert off.status == 403 and "--admin-token" in off.json()["error"] and "0.0.0.0" in off.json()["error"]
        assert call(server.url + "/dashboard").status == 403


# -- in a real browser ---------------------------------------------------------------------------
def _number(browser: Any, element: str) -> int:
    text = browser.evaluate(f"document.getElementById({orjson.dumps(element).decode()}).textContent")
    return int(text) if text and text.isdigit() else -1


def test_the_dashboard_in_a_real_browser(tmp_path: Path) -> None:
    from tests.cdp import Browser, find_chromium

    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium on this machine: .ci/run installs Debian's chromium package")
    with Node(tmp_path / "node", workers=2, schedulers=1) as node, HttpServer(node, port=0) as server:
        pids = [node.spawn(examples.wasm("counter"), {"Name": f"browsed-{i}"}) for i in range(3)]
        marked = node.send(pids[0], {"Action": "Inc", "Marker": "seen-in-the-browser"}, "a message from the test")
        node.result(marked, timeout=60)
        stop = threading.Event()

        def load() -> None:  # a steady trickle, bounded: at most 600 batches
            for round_ in range(600):
                if stop.is_set():
                    return
                node.results(node.send_many([(pids[(round_ + i) % 3], {"Action": "Inc"}, "") for i in range(50)]),
                             timeout=60)

        sender = threading.Thread(target=load, name="load")
        sender.start()
        browser = Browser(chromium, tmp_path / "profile")
        try:
            browser.navigate(server.url + "/dashboard")
            browser.wait_until("document.getElementById('live').textContent.startsWith('live')", "the first sample")
            # The numbers move while the load runs.
            first = _number(browser, "stat-evaluated")
            browser.wait_until(f"Number(document.getElementById('stat-evaluated').textContent) > {first}",
                               "the evaluated count to move")
            assert _number(browser, "stat-assigned") <= call(server.url + "/actorao/status").json()["assigned"]
            stop.set()
            sender.join(120)
            # Quiet: the page comes to say what /actorao/status says.
            # Every send above waited for its results; a result can be read once its worker commits it,
            # a moment before the worker's report counts it.
            wait_for(lambda: (lambda s: s["evaluated"] == s["assigned"])(call(server.url + "/actorao/status").json()),
                     "every result to be counted")
            status = call(server.url + "/actorao/status").json()
            assert status["evaluated"] == status["assigned"]
            browser.wait_until(
                f"document.getElementById('stat-assigned').textContent === '{status['assigned']}' && "
                f"document.getElementById('stat-evaluated').textContent === '{status['evaluated']}' && "
                f"document.getElementById('stat-processes').textContent === '{status['processes']}'",
                "the page to match /actorao/status")
            rate = browser.evaluate("document.getElementById('stat-evaluated-rate').textContent")
            assert rate.endswith("/s")
            # The tree: fold and unfold the CU pool, then open a worker and one of its processes.
            browser.wait_until("!!document.getElementById('tree-worker-1')", "the workers in the tree")
            assert "pid" in browser.evaluate("document.getElementById('tree-worker-0').textContent")
            browser.click("#tree-cu-pool")
            browser.wait_until("document.querySelector('li.closed[data-id=\"cu-pool\"] > ul').hidden", "a folded pool")
            browser.click("#tree-cu-pool")
            browser.wait_until("!document.querySelector('li[data-id=\"cu-pool\"]').classList.contains('closed')",
                               "an unfolded pool")
            worker = f"worker-{node.worker_of(pids[0])}"
            browser.click(f"#tree-{worker}")
            browser.wait_until(f"!!document.querySelector('#worker-processes a[href=\"#/process/{pids[0]}\"]')",
                               f"{worker}'s processes")
            assert worker in browser.evaluate("document.getElementById('worker-detail-title').textContent")
            browser.click(f"#worker-processes a[href=\"#/process/{pids[0]}\"]")
            # The process page finds the message this test sent, with its tags and data.
            row = browser.wait_until(
                f"(() => {{ const r = document.querySelector('#process-log tr[data-message=\"{marked.id}\"]');"
                " return r && r.textContent; })()", "the sent message on the process page")
            assert "Marker=seen-in-the-browser" in row and "a message from the test" in row
            assert browser.evaluate("document.getElementById('process-name').textContent") == "browsed-0"
            browser.wait_until("document.getElementById('process-memory').textContent.includes('after slot')",
                               "the memory size")
            # Search by name.
            browser.navigate(server.url + "/dashboard#/processes")
            browser.wait_until("!!document.getElementById('process-search')", "the search box")
            browser.evaluate("(() => { const box = document.getElementById('process-search');"
                             " box.value = 'browsed-2'; box.dispatchEvent(new Event('input')); })()")
            browser.wait_until(f"!!document.querySelector('#process-list a[href=\"#/process/{pids[2]}\"]') && "
                               "document.getElementById('process-total').textContent === '1 found'",
                               "the search result")
            browser.navigate(server.url + "/dashboard")
            browser.wait_until("document.getElementById('live').textContent.startsWith('live') && "
                               "!!document.getElementById('tree-worker-1')", "the overview again")
            shot = browser.screenshot(tmp_path / "dashboard.png")
            assert shot.read_bytes().startswith(b"\x89PNG")
            readme_shot = os.environ.get("ACTORAO_DASHBOARD_SCREENSHOT")
            if readme_shot:
                shutil.copyfile(shot, readme_shot)
        finally:
            stop.set()
            browser.close()
            sender.join(120)


def test_a_loopback_bind_without_a_token_answers_only_loopback_names(served: tuple[Node, str, Path]) -> None:
    _, url, _ = served
    port = url.rpartition(":")[2]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "127.0.0.1"):
        assert call(url + "/metrics", {"Host": host}).status == 200, host
    rebound = call(url + "/dashboard/api/processes", {"Host": f"evil.example:{port}"})
    assert rebound.status == 403 and "'evil.example:" in rebound.json()["error"]
    assert call(url + "/", {"Host": f"evil.example:{port}"}).status == 200  # AO's API is not the gate's
