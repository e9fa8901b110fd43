"""One NodeConfig: defaults in one place, the environment read once, bad settings named; the node's own
futures and Timeout; and the rooms' boundaries (only persist spells a key, the edge reads through the node)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import actorao
from actorao import Future, InvalidMessage, Node, NodeConfig, Timeout

PACKAGE = Path(actorao.__file__).parent


def test_from_env_reads_actorao_variables_and_overrides_win() -> None:
    environ = {"ACTORAO_WORKERS": "3", "ACTORAO_WORKER_THREADS": "2", "ACTORAO_MAX_BACKLOG": "77",
               "ACTORAO_VERIFY": "off", "ACTORAO_RESTART_INTENSITY": "4/2.5", "ACTORAO_PATH": "/tmp/somewhere",
               "ACTORAO_URL": "ignored"}
    config = NodeConfig.from_env(environ, max_backlog=None, port=9000)
    assert config.workers == 3
    assert config.worker_threads == 2
    assert config.max_backlog == 77
    assert config.verify is False
    assert config.restart_intensity == (4, 2.5)
    assert config.path == Path("/tmp/somewhere")
    assert config.port == 9000  # given, so it wins; None (a flag not given) never does
    assert config.max_pending == NodeConfig().max_pending  # untouched settings keep their default
    assert NodeConfig.from_env({"ACTORAO_WORKERS": "3"}, workers=5).workers == 5


@pytest.mark.parametrize(("variable", "text"), [("ACTORAO_WORKERS", "many"), ("ACTORAO_VERIFY", "maybe"),
                                                ("ACTORAO_CHECKPOINT_MS", "soon")])
def test_a_variable_that_does_not_parse_names_itself(variable: str, text: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        NodeConfig.from_env({variable: text})
    assert caught.value.field == variable
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize(("setting", "value"), [("workers", 0), ("worker_threads", 0), ("max_pending", -1),
                                                ("timeout", 0), ("port", 70000), ("compute_limit", True)])
def test_a_bad_setting_is_refused_with_its_name(setting: str, value: object) -> None:
    with pytest.raises(InvalidMessage) as caught:
        NodeConfig().replace(**{setting: value})
    assert caught.value.field == setting


def test_a_default_limit_over_its_ceiling_is_refused() -> None:
    with pytest.raises(InvalidMessage, match="max_compute_limit") as caught:
        NodeConfig(compute_limit=NodeConfig().max_compute_limit + 1)
    assert caught.value.field == "compute_limit"
    with pytest.raises(InvalidMessage, match="max_memory_limit"):
        NodeConfig(memory_limit=2 << 20, max_memory_limit=1 << 20)
    assert NodeConfig.from_env({"ACTORAO_MAX_COMPUTE_LIMIT": "7"}, compute_limit=7).max_compute_limit == 7


def test_an_unknown_setting_is_a_type_error_that_names_it(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="max_backlgo"):
        NodeConfig().replace(max_backlgo=3)
    with pytest.raises(TypeError, match="max_backlgo"):
        Node(tmp_path / "node", workers=1, max_backlgo=3)
    assert not (tmp_path / "node").exists()  # refused before anything was opened


def test_node_takes_a_config_or_a_path_with_settings(tmp_path: Path, counter: bytes) -> None:
    config = NodeConfig(path=tmp_path / "node", workers=1, max_backlog=5, clock=lambda: 1_700_000_000.5)
    with Node(config) as node:
        assert node.config == config and node.workers == 1
        pid = node.spawn(counter)
        assert node.reads.spawn(pid).doc()["Timestamp"] == 1_700_000_000_500  # stamped by the injected clock
    with Node(tmp_path / "node", workers=1, max_backlog=6) as node:
        assert node.config.max_backlog == 6 and node.config.path == tmp_path / "node"


def _os_threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


def test_worker_threads_is_how_many_evaluation_threads_each_worker_runs(tmp_path: Path, counter: bytes) -> None:
    threads = {}
    for wanted in (1, 3):
        config = NodeConfig(path=tmp_path / f"node-{wanted}", workers=1, schedulers=1, worker_threads=wanted)
        with Node(config) as node:
            pid = node.spawn(counter)  # the same work on both nodes: the same threads besides the lanes
            assert node.result(node.send(pid, {"Action": "Inc"})).output == "1"
            worker = node.tree()["children"][0]["children"][0]
            threads[wanted] = _os_threads(worker["pid"])
    assert threads[3] - threads[1] == 2


def test_futures_are_the_projects_own_and_time_out_as_actorao_timeout() -> None:
    future: Future[int] = Future()
    with pytest.raises(Timeout) as caught:
        future.result(timeout=0.01)
    assert isinstance(caught.value, TimeoutError)  # catchable the ordinary way too
    assert isinstance(caught.value.__cause__, TimeoutError)  # chained from what concurrent.futures raised
    future.set_result(7)
    assert future.get(timeout=0) == 7 == future.result()


def test_a_nowait_call_returns_a_future_that_gives_the_ack(tmp_path: Path, counter: bytes) -> None:
    with Node(tmp_path / "node", workers=1) as node:
        pid = node.spawn(counter)
        future = node.send_nowait(pid, {"Action": "Inc"})
        assert isinstance(future, Future)
        ack = future.result(timeout=30)
        assert (ack.process, ack.slot) == (pid, 1)
        assert node.result_nowait(ack).result(timeout=30).output == "1"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_edge_reads_through_the_node_and_never_imports_the_units() -> None:
    edge = [*sorted((PACKAGE / "http").glob("*.py")), PACKAGE / "cli.py", *sorted((PACKAGE / "bench").glob("*.py")),
            *sorted((PACKAGE / "dashboard").glob("*.py"))]
    for path in edge:
        reached = {name for name in _imports(path)
                   if name.split(".")[:2] in (["actorao", "persist"], ["actorao", "su"], ["actorao", "cu"])}
        assert not reached, f"{path.relative_to(PACKAGE)} imports {sorted(reached)}"


def test_only_persist_opens_transactions_on_the_store() -> None:
    """The key layout is persist's: no other room touches an LMDB database or transaction."""
    spelled = ("txn.put(", "txn.get(", "txn.cursor(", "txn.delete(", "db=store.", "db=self.store.", ".db[")
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "persist":
            continue
        text = path.read_text()
        hits = [needle for needle in spelled if needle in text]
        assert not hits, f"{path.relative_to(PACKAGE)} spells the store's layout: {hits}"
