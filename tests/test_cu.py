"""Hosting processes in a worker, in-process on a real store: order, rollback, checkpoints, placement."""

from __future__ import annotations

import base64
import gc
import hashlib
import select
import threading
import weakref
from collections import Counter
from pathlib import Path

import orjson
import pytest
import wasmtime

from actorao import Node, Timeout, examples
from actorao.cu import Limits, place
from actorao.cu import _checkpoint as checkpoints
from actorao.cu._ahead import Ahead, AheadLogs, by_process
from actorao.cu._lanes import Finished, Lanes, Op
from actorao.cu._pool import _rebalanced, place_bounded
from actorao.cu._process import HELD_FUEL, TURN_SECONDS, HostedProcess
from actorao.cu._worker import _MAX_QUEUED_PER_PROCESS, CATCH_UP, FORGET, Worker, WorkerConfig, _work_of
from actorao.mailbox import ASSIGN, pack
from actorao.message import Message, Process, module_json, new_id, with_ao_tags
from actorao.persist import Store, log_key
from actorao.su import ModuleRecord, SchedulerUnit
from actorao.vm import Evaluator, Instance, compile_module
from tests.streams import eventually
from tests.test_vm import GLOBAL_COUNTER

OWNER = new_id(b"owner")


def fixed_pids(count: int) -> list[str]:
    """Ids that are the same on every run: ``new_id`` is fresh per call, so a test over its hashes
    would pass or fail by the draw."""
    return [base64.urlsafe_b64encode(hashlib.sha256(b"pid-%d" % i).digest()).decode()[:43] for i in range(count)]


def no_compute_time() -> float:
    """A compute clock that never moves: checkpoints follow the message count alone, whatever the box's load."""
    return 0.0


def config(tmp_path: Path, checkpoint_every: int) -> WorkerConfig:
    return WorkerConfig(0, str(tmp_path), str(tmp_path / "run"), Limits(10**9, 1 << 30, checkpoint_every), 1 << 30)


def populate(
    store: Store, actions: list[str], module: str = "trapper", wasm: bytes | None = None
) -> tuple[str, list[tuple[bytes, bytes]]]:
    """Spawn one process through a real SU and assign ``actions`` to it; return its pushed log."""
    pushed: list[tuple[str, bytes, bytes]] = []
    su = SchedulerUnit(store, pushed.extend)
    wasm = wasm or examples.wasm(module)
    record = ModuleRecord(new_id(wasm), wasm, b'{"owner":"%s","tags":[]}' % OWNER.encode())
    pid = new_id(b"p")
    tags = with_ao_tags({"Module": record.id, "Scheduler": OWNER}, "Process")
    su.submit(Process(pid, OWNER, record.id, OWNER, tags), record).get(timeout=10)
    futures = [su.submit(Message(new_id(b"m"), OWNER, pid, with_ao_tags({"Action": a}, "Message"))) for a in actions]
    for future in futures:
        future.get(timeout=10)
    su.close()
    return pid, [(key, body) for _, key, body in pushed]


def feed(worker: Worker, entries: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    worker.assign([part for entry in entries for part in entry], out)
    worker.commit(out)
    return out


def test_a_failed_message_leaves_memory_bit_for_bit_as_before(tmp_path: Path) -> None:
    store = Store(tmp_path)
    pid, entries = populate(store, ["Inc"] * 5 + ["Trap", "Loop", "Grow", "Inc"])
    worker = Worker(config(tmp_path, checkpoint_every=2), store, compute_clock=no_compute_time)
    feed(worker, entries[:6])
    process = worker.hosted(pid)
    assert process is not None
    before = process.instance.digest()
    for entry in entries[6:9]:
        [(_, result)] = feed(worker, [entry])
        assert b'"Error":' in result
        assert process.instance.digest() == before
    results = feed(worker, entries[9:])
    assert b'"Output":"6"' in results[0][1]


def test_recovery_from_checkpoint_plus_log_equals_never_stopping(tmp_path: Path) -> None:
    actions = ["Inc", "Inc", "Trap", "Inc", "Grow"] * 10
    store = Store(tmp_path)
    pid, entries = populate(store, actions)
    straight = Worker(config(tmp_path, checkpoint_every=7), store, compute_clock=no_compute_time)
    straight_results = feed(straight, entries)
    assert checkpoints.load(store, pid) is not None

    recovered = Worker(config(tmp_path, checkpoint_every=7), store, compute_clock=no_compute_time)
    process = recovered.hosted(pid)
    assert process is not None
    assert process.checkpoint_slot > 0
    assert process.inbox.next_slot == len(entries)
    hosted = straight.hosted(pid)
    assert hosted is not None
    assert process.instance.digest() == hosted.instance.digest()

    # Forget every checkpoint and result, and evaluate the same log from scratch with no checkpoints.
    store.forget_computed()
    from_scratch = Worker(config(tmp_path, checkpoint_every=10**6), store, compute_clock=no_compute_time)
    assert feed(from_scratch, entries) == straight_results
    hosted_b = from_scratch.hosted(pid)
    assert hosted_b is not None
    assert hosted_b.checkpoint_slot == -1
    assert hosted_b.instance.digest() == hosted.instance.digest()


def test_a_gap_is_filled_from_the_log(tmp_path: Path) -> None:
    store = Store(tmp_path)
    _, entries = populate(store, ["Inc"] * 10, module="counter")
    worker = Worker(config(tmp_path, checkpoint_every=1000), store, compute_clock=no_compute_time)
    results = feed(worker, [entries[0], entries[7]])  # slots 1..6 were lost in transit
    assert [r.count(b"Output") for _, r in results] == [1] * 8
    assert b'"Output":"7"' in results[-1][1]
    assert feed(worker, entries[3:5]) == []  # late duplicates are dropped


def test_placement_is_stable_and_moves_few_processes_when_workers_change() -> None:
    pids = fixed_pids(3000)
    two = [place(pid, 2) for pid in pids]
    assert two == [place(pid, 2) for pid in pids]
    share = Counter(two)
    assert abs(share[0] - share[1]) < 300
    three = [place(pid, 3) for pid in pids]
    moved = sum(1 for a, b in zip(two, three, strict=True) if a != b)
    assert moved < 1300  # about a third move, all of them to the new worker
    assert all(b == 2 for a, b in zip(two, three, strict=True) if a != b)


def test_bounded_placement_evens_out_few_heavy_processes() -> None:
    pids = fixed_pids(200)
    for workers in (2, 3, 16):
        for count in (2, 5, 8, 37, 200):
            loads = [0] * workers
            for pid in pids[:count]:
                loads[place_bounded(pid, loads)] += 1
            assert max(loads) - min(loads) <= 1, (workers, count, loads)
    # where the preferred worker has room, the preference wins: no one moves for nothing
    loads = [0, 0]
    assert place_bounded(pids[0], loads) == place(pids[0], 2)
    # a rebalance keeps everyone who may stay, and evens out the rest
    current = {pid: place(pid, 2) for pid in pids[:50]}
    # each old worker holds at least the new even share (17), so all who move go to the new worker
    assert min(Counter(current.values()).values()) >= 17
    grown = _rebalanced(current, 3)
    assert sorted(Counter(grown.values()).values()) == [16, 17, 17]
    assert all(grown[pid] == 2 for pid in current if grown[pid] != current[pid])
    shrunk = _rebalanced(grown, 2)
    assert sorted(Counter(shrunk.values()).values()) == [25, 25]


# trapper, with a Loop that ends: a million turns (several million fuel), then one added
LONG_LOOP = examples.wat("trapper").replace(
    "(loop $forever (br $forever))",
    "(i32.store (i32.const 8) (i32.const 0)) (block $out (loop $spin "
    "(br_if $out (i32.ge_u (i32.load (i32.const 8)) (i32.const 1000000))) "
    "(i32.store (i32.const 8) (i32.add (i32.load (i32.const 8)) (i32.const 1))) (br $spin)))",
)


def long_loop_worker(tmp_path: Path) -> tuple[Worker, str, list[tuple[bytes, bytes]], list[tuple[bytes, bytes]], bytes]:
    """A worker whose LONG_LOOP process has taken its spawn and two small messages, so that it runs held:
    the worker, the process, its whole log, the results so far, and the module."""
    store = Store(tmp_path)
    wasm = bytes(wasmtime.wat2wasm(LONG_LOOP))
    pid, entries = populate(store, ["Inc", "Inc", "Loop", "Inc", "Loop", "Get"], wasm=wasm)
    worker = Worker(config(tmp_path, checkpoint_every=1000), store, compute_clock=no_compute_time)
    results = feed(worker, entries[:3])
    assert worker.processes[pid].held == HELD_FUEL  # small messages: the next one runs with the GIL held
    return worker, pid, entries, results, wasm


def assign_ops(pid: str, entries: list[tuple[bytes, bytes]]) -> list[Op]:
    """A turn of ``pid``'s: the log ``entries`` as one ASSIGN."""
    return [(ASSIGN, by_process([part for entry in entries for part in entry])[pid])]


def assert_as_straight(wasm: bytes, entries: list[tuple[bytes, bytes]], process: HostedProcess,
                       results: list[tuple[bytes, bytes]]) -> None:
    """The same log, evaluated straight on one instance and never held, gives ``results`` and leaves the
    process's memory."""
    straight = Instance(compile_module(wasm), memory_limit=1 << 30)
    evaluator = Evaluator(10**9)
    assert [evaluator.evaluate(straight, body, process.env)[0] for _, body in entries] == [r for _, r in results]
    assert straight.digest() == process.instance.digest()


def test_a_long_message_after_small_ones_runs_again_with_the_gil_let_go_and_gives_a_straight_runs_result(
    tmp_path: Path,
) -> None:
    worker, pid, entries, results, wasm = long_loop_worker(tmp_path)
    results += feed(worker, entries[3:])
    process = worker.processes[pid]
    assert process.held == 0  # the Loop burnt more than HELD_FUEL: never held again
    outputs = [orjson.loads(result).get("Output") for _, result in results]
    assert outputs == ["0", "1", "2", "3", "4", "5", "5"]
    assert_as_straight(wasm, entries, process, results)


def test_a_turn_on_the_main_thread_hands_a_long_message_and_what_follows_to_a_thread_and_gives_a_straight_runs_result(
    tmp_path: Path,
) -> None:
    worker, pid, entries, results, wasm = long_loop_worker(tmp_path)
    ops = assign_ops(pid, entries[3:])
    assert worker.inline(pid, ops)  # small messages so far, assignments only: the main thread may run it
    turn = worker.run_inline(pid, ops)
    # the Loop (slot 3) ran past HELD_FUEL: nothing of it is kept, and it and all after it are left
    assert turn.results == []
    assert turn.left == assign_ops(pid, entries[3:])
    process = worker.processes[pid]
    assert not process.handing_off
    assert not worker.inline(pid, turn.left)  # never held again: a thread takes what is left
    rest = worker.run(pid, turn.left)  # as an evaluation thread does
    assert rest.left is None
    worker.commit(rest.results, rest.checkpoints)
    results += rest.results
    assert [key for key, _ in results] == [key for key, _ in entries]
    assert [orjson.loads(result).get("Output") for _, result in results] == ["0", "1", "2", "3", "4", "5", "5"]
    assert_as_straight(wasm, entries, process, results)


class TickingClock:
    """A compute clock that moves ``step`` seconds each time it is read: each message takes the same
    compute, whatever the box's load."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_a_turn_on_the_main_thread_ends_when_its_messages_have_taken_their_share_of_compute(tmp_path: Path) -> None:
    store = Store(tmp_path)
    pid, entries = populate(store, ["Inc"] * 31, module="counter")
    # the clock is read as a message starts and as it ends: each message takes 0.5 ms of TURN_SECONDS' 2 ms
    worker = Worker(config(tmp_path, checkpoint_every=1000), store, compute_clock=TickingClock(TURN_SECONDS / 4))
    results = feed(worker, entries[:2])
    sizes = []
    ops: list[Op] | None = assign_ops(pid, entries[2:])
    while ops:
        assert worker.inline(pid, ops)
        turn = worker.run_inline(pid, ops)
        sizes.append(len(turn.results))
        results += turn.results
        ops = turn.left
    assert sizes == [4] * 7 + [2]
    assert [key for key, _ in results] == [key for key, _ in entries]  # every slot once, in order
    assert [orjson.loads(result).get("Output") for _, result in results][-1] == "31"
    assert_as_straight(examples.wasm("counter"), entries, worker.processes[pid], results)


@pytest.mark.parametrize(("checkpoint_every", "last_checkpoint"), [(1, 10), (5, 9), (4, 7)])
def test_checkpoints_are_written_on_schedule(tmp_path: Path, checkpoint_every: int, last_checkpoint: int) -> None:
    store = Store(tmp_path)
    pid, entries = populate(store, ["Inc"] * 10, module="counter")
    worker = Worker(config(tmp_path, checkpoint_every), store, compute_clock=no_compute_time)
    feed(worker, entries)
    loaded = checkpoints.load(store, pid)
    assert loaded is not None
    assert loaded[0] == last_checkpoint  # slots 0..10, a checkpoint per N evaluated


def test_a_process_that_cannot_instantiate_answers_each_slot_once_with_its_error(tmp_path: Path) -> None:
    store = Store(tmp_path)
    pid, entries = populate(store, ["Inc"] * 3, module="counter")
    tight = WorkerConfig(0, str(tmp_path), str(tmp_path / "run"), Limits(10**9, 65536, 1000), 1 << 30)
    worker = Worker(tight, store, compute_clock=no_compute_time)  # the counter needs two pages; one is allowed
    results = feed(worker, entries[:2])  # the first contact answers every slot the log holds
    assert [key for key, _ in results] == [key for key, _ in entries]
    assert all(b"instantiation failed" in result for _, result in results)
    assert pid in worker.broken and pid not in worker.processes
    assert feed(worker, entries[2:]) == []  # answered once, not again


def test_failures_count_towards_checkpoints_so_a_rollback_replays_a_bounded_log(tmp_path: Path) -> None:
    store = Store(tmp_path)
    pid, entries = populate(store, ["Inc"] + ["Trap"] * 30)
    worker = Worker(config(tmp_path, checkpoint_every=10), store, compute_clock=no_compute_time)
    feed(worker, entries)
    process = worker.hosted(pid)
    assert process is not None
    assert process.checkpoint_slot == 29  # slots 0..31: a checkpoint after every ten, failures included
    assert process.failed == {30, 31}


@pytest.mark.parametrize("let_go", ["evict", "forget"])
def test_a_process_the_worker_lets_go_of_is_freed_at_once_with_its_instance(tmp_path: Path, let_go: str) -> None:
    """Nothing a hosted process holds refers back to it: let go of (moved to another worker, or forgotten
    after a void push), it is freed by reference counting, its instance and linear memory with it, and does
    not wait for a full collection, which a worker with many long-lived processes runs rarely."""
    store = Store(tmp_path)
    pid, entries = populate(store, ["Inc"] * 5, module="counter")
    worker = Worker(config(tmp_path, checkpoint_every=2), store, compute_clock=no_compute_time)
    assert len(feed(worker, entries)) == 6
    process = worker.processes[pid]
    refs = {"process": weakref.ref(process), "instance": weakref.ref(process.instance)}
    del process
    gc.disable()  # only reference counting frees anything from here
    try:
        if let_go == "evict":
            worker.evict_one(pid)
        else:
            assert worker.run(pid, [(FORGET, None)]).forgot
        worker.commit([])
        assert {name: ref() is None for name, ref in refs.items()} == {"process": True, "instance": True}
    finally:
        gc.enable()
    assert worker.hosted(pid) is not None and worker.processes[pid].inbox.next_slot == 6  # it loads again


def test_state_in_a_module_global_survives_rollback_checkpoints_and_dry_runs(tmp_path: Path) -> None:
    store = Store(tmp_path)
    wasm = bytes(wasmtime.wat2wasm(GLOBAL_COUNTER))
    pid, entries = populate(store, ["Inc", "Inc", "Inc", "Trap", "Inc"], wasm=wasm)
    worker = Worker(config(tmp_path, checkpoint_every=2), store, compute_clock=no_compute_time)
    outputs = [orjson.loads(result).get("Output") for _, result in feed(worker, entries)]
    assert outputs == ["0", "1", "2", "3", "", "4"]
    dry = module_json(Message(new_id(), OWNER, pid, with_ao_tags({"Action": "Inc"}, "Message")), None)
    for _ in range(3):
        assert b'"Output":"5"' in worker.dry_run([b"t", pid.encode(), dry], [])[1]
    recovered = Worker(config(tmp_path, checkpoint_every=2), store, compute_clock=no_compute_time).hosted(pid)
    assert recovered is not None
    assert b'"Output":"4"' in recovered.dry_run(dry.replace(b'"Inc"', b'"Get"'))


def test_a_process_whose_checkpoint_will_not_restore_is_isolated_and_its_neighbour_carries_on(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path)
    bad, bad_entries = populate(store, ["Inc"] * 3, module="counter")
    good, good_entries = populate(store, ["Inc"] * 3, module="counter")
    store.computed.write(lambda txn: txn.put(log_key(bad, 2), b"\1" * 40 + b"not a checkpoint", db=store.checkpoints))
    worker = Worker(config(tmp_path, checkpoint_every=1000), store, compute_clock=no_compute_time)
    results = dict(feed(worker, bad_entries + good_entries))
    assert all(b'"Error":' in results[key] for key, _ in bad_entries)
    assert b'"Output":"3"' in results[good_entries[-1][0]]
    assert bad in worker.broken and good in worker.processes


# -- neighbours: a long message holds up its own process only ----------------------------------

def test_lanes_run_a_neighbour_while_a_process_is_held_in_its_turn() -> None:
    clock = [0.0]
    held, release = threading.Event(), threading.Event()
    ran: list[tuple[str, int]] = []

    def run(pid: str, ops: list[Op]) -> Finished:
        if pid == "slow":
            held.set()
            release.wait()
        ran.extend((pid, item) for _, batch in ops for item in batch)
        return Finished([(pid.encode(), bytes([item])) for _, batch in ops for item in batch], [], [])

    lanes = Lanes(run, 2, clock=lambda: clock[0])
    try:
        lanes.submit({"slow": [(b"A", [1])], "fast": [(b"A", [1])]})
        assert held.wait(10)
        lanes.submit({"fast": [(b"A", [2])], "slow": [(b"A", [2])]})
        clock[0] += lanes.stall  # the one thread at work has taken nothing for a stall: wake another
        lanes.nudge()
        done: list[tuple[bytes, bytes]] = []
        while len(done) < 2:
            select.select([lanes.fd], [], [], 10)
            done += [pair for turn in lanes.collect() for pair in turn.results]
        assert done == [(b"fast", b"\x01"), (b"fast", b"\x02")] and lanes.busy()
        release.set()
        while len(done) < 4:
            select.select([lanes.fd], [], [], 10)
            done += [pair for turn in lanes.collect() for pair in turn.results]
        assert done[2:] == [(b"slow", b"\x01"), (b"slow", b"\x02")]  # in order, one thread at a time
        assert [entry for entry in ran if entry[0] == "slow"] == [("slow", 1), ("slow", 2)]
    finally:
        release.set()
        lanes.stop()
        lanes.close()


def test_a_turn_that_is_the_workers_only_work_is_offered_to_direct_and_the_rest_is_collected() -> None:
    """A lone turn goes to ``direct`` (no wake of the main thread, nothing to collect). A turn that
    ends beside other work, or while an earlier one waits to be collected, is collected, in order;
    and so is one that ``direct`` declines."""
    held, release = threading.Event(), threading.Event()
    offered: list[bytes] = []
    taken = threading.Event()
    decline = [False]

    def run(pid: str, ops: list[Op]) -> Finished:
        if pid == "slow":
            held.set()
            release.wait()
        return Finished([(pid.encode(), b"")], [], [], pid)

    def direct(turn: Finished) -> bool:
        offered.append(turn.results[0][0])
        taken.set()
        return not decline[0]

    def collected() -> list[bytes]:
        assert select.select([lanes.fd], [], [], 10)[0]
        return [turn.results[0][0] for turn in lanes.collect()]

    clock = [0.0]
    lanes = Lanes(run, 2, clock=lambda: clock[0], direct=direct)
    try:
        lanes.submit({"alone": [(b"A", [1])]})
        assert taken.wait(10) and eventually(lambda: not lanes.busy(), 10)
        assert offered == [b"alone"] and not select.select([lanes.fd], [], [], 0)[0] and lanes.collect() == []
        taken.clear()
        lanes.submit({"slow": [(b"A", [1])]})
        assert held.wait(10)
        lanes.submit({"fast": [(b"A", [1])]})
        clock[0] += lanes.stall  # the one thread at work has taken nothing for a stall: wake another
        lanes.nudge()
        assert collected() == [b"fast"]  # "slow" still ran: not offered
        lanes.submit({"fast": [(b"A", [2])]})
        clock[0] += lanes.stall
        lanes.nudge()
        assert eventually(lambda: "fast" not in lanes._queued and "fast" not in lanes._running, 10)
        release.set()  # "slow" ends while the second "fast" waits to be collected: not offered either
        assert eventually(lambda: "slow" not in lanes._running, 10)
        assert collected() == [b"fast", b"slow"] and offered == [b"alone"]
        decline[0] = True
        lanes.submit({"declined": [(b"A", [1])]})
        assert collected() == [b"declined"] and offered == [b"alone", b"declined"]
    finally:
        release.set()
        lanes.stop()
        lanes.close()


def test_a_fault_in_a_threads_own_commit_ends_the_worker_as_one_on_the_main_thread_does() -> None:
    """A commit that fails on an evaluation thread (a full disk, say) must not end that thread alone,
    leaving its process stuck: ``collect`` raises it, and the worker exits to be started again."""
    def run(pid: str, ops: list[Op]) -> Finished:
        return Finished([(pid.encode(), b"")], [], [], pid)

    def direct(turn: Finished) -> bool:
        raise OSError(28, "No space left on device")

    lanes = Lanes(run, 1, direct=direct)
    try:
        lanes.submit({"full": [(b"A", [1])]})
        assert select.select([lanes.fd], [], [], 10)[0]
        with pytest.raises(OSError, match="No space left"):
            lanes.collect()
        assert not lanes._running  # the thread ended its turn, and lives on to be stopped
    finally:
        assert lanes.stop()
        lanes.close()


def test_a_lone_long_message_is_stored_before_its_result_returns(tmp_path: Path) -> None:
    """Messages that run past HELD_FUEL run on the worker's threads, and a lone one's thread commits and
    reports it itself: still in order, and stored by the time its result is back."""
    with Node(tmp_path / "node", workers=1, schedulers=1) as node:
        pid = node.spawn(bytes(wasmtime.wat2wasm(LONG_LOOP)))
        outputs = []
        for _ in range(12):
            ack = node.send(pid, {"Action": "Loop"})
            outputs.append(node.result(ack, timeout=60).output)
            stored = node.raw_results([node.result_key(ack)], timeout=0.001)  # from the store, or Timeout
            assert orjson.loads(stored[0])["Output"] == outputs[-1]
        assert outputs == [str(count) for count in range(1, 13)]
        report = node.verify(pid, timeout=120)
        assert report.ok, report


def test_a_process_held_in_its_turn_reads_assignments_past_its_cap_from_the_log(tmp_path: Path) -> None:
    """Frames that keep a process's waiting items under _MAX_QUEUED_PER_PROCESS queue them; past the cap,
    its assignments become one catch-up from the log, and its neighbours' are queued as before."""
    held, release = threading.Event(), threading.Event()

    def run(pid: str, ops: list[Op]) -> Finished:
        held.set()
        release.wait()
        return Finished([], [], [])

    def frame(pid: str, slots: range) -> bytes:
        return pack(ASSIGN, [part for slot in slots for part in (log_key(pid, slot), b"{}")])

    store = Store(tmp_path)
    logs = AheadLogs(store, 1, map_size=1 << 24, metasync=False)
    lanes = Lanes(run, 1)
    try:
        lanes.submit({"busy": [(ASSIGN, [(0, b"{}")])]})
        assert held.wait(10)  # the one thread is in "busy"'s turn: what follows waits
        cap = _MAX_QUEUED_PER_PROCESS
        work, stop = _work_of([frame("slow", range(cap - 1))], lanes, 0, Ahead(logs))
        assert not stop and [op[0] for op in work["slow"]] == [ASSIGN] and len(work["slow"][0][1]) == cap - 1
        lanes.submit(work)
        work, _ = _work_of([frame("slow", range(cap - 1, cap + 1)), frame("other", range(2))], lanes, 0, Ahead(logs))
        assert work["slow"] == [(CATCH_UP, None)]
        assert work["other"] == [(ASSIGN, [(0, b"{}"), (1, b"{}")])]
        lanes.submit(work)
        work, _ = _work_of([frame("slow", range(cap + 1, cap + 2))], lanes, 0, Ahead(logs))
        assert work["slow"] == []  # a catch-up already waits last: it reads this slot too
    finally:
        release.set()
        lanes.stop()
        lanes.close()
        logs.close()
        store.close()


def test_a_message_that_never_ends_holds_up_only_its_own_process(tmp_path: Path) -> None:
    endless = 10**15  # fuel for days of `(loop (br 0))`
    with Node(tmp_path / "node", workers=1, schedulers=1, max_compute_limit=endless) as node:
        hostile = node.spawn(examples.wasm("trapper"), {"Compute-Limit": str(endless)})
        neighbour = node.spawn(examples.wasm("counter"))
        looping = node.result_nowait(node.send(hostile, {"Action": "Loop"}))  # its worker gets it first
        counts = [node.result(node.send(neighbour, {"Action": "Inc"}), timeout=60).output for _ in range(20)]
        assert not looping.done()
        assert counts == [str(count) for count in range(1, 21)]


def test_a_worker_hands_a_long_message_from_its_main_thread_to_a_thread_and_replays_to_the_same_state(
    tmp_path: Path,
) -> None:
    with Node(tmp_path / "node", workers=1, schedulers=1) as node:
        pid = node.spawn(bytes(wasmtime.wat2wasm(LONG_LOOP)))
        # small messages, one by one: from the second the process runs held, its turns on the main thread
        assert [node.result(node.send(pid, {"Action": "Inc"}), timeout=60).output for _ in range(2)] == ["1", "2"]
        # in one batch: the Loop runs past HELD_FUEL on the main thread, and a thread takes it and the rest
        acks = node.send_many([(pid, {"Action": action}, "") for action in ("Loop", "Inc", "Loop", "Get")])
        assert [result.output for result in node.results(acks, timeout=120)] == ["3", "4", "5", "5"]
        report = node.verify(pid, timeout=120)  # a fresh replay of the log: the same results and memory
        assert report.ok, report


def test_a_waiter_takes_stored_results_from_the_store_and_waits_only_for_the_rest(tmp_path: Path) -> None:
    from actorao.cu._rendezvous import Rendezvous

    store = Store(tmp_path)
    pid = new_id(b"rendezvous")
    keys = [log_key(pid, slot) for slot in range(4)]
    stored = [(keys[0], b'{"Output":"0"}'), (keys[2], b'{"Output":"2"}')]
    store.computed.write(lambda txn: store.put_results(txn, stored))
    rendezvous = Rendezvous(store)
    got: list[list[bytes]] = []
    waiting = threading.Thread(target=lambda: got.append(rendezvous.wait(keys, 60)))
    waiting.start()
    def registered() -> set[bytes]:
        with rendezvous._lock:
            return set(rendezvous._waiting)

    while registered() != {keys[1], keys[3]}:  # registered for the missing ones only
        assert waiting.is_alive() and not got
    rendezvous.arrived([keys[3], b'{"Output":"3"}', keys[1], b'{"Output":"1"}'])
    waiting.join(60)
    assert got == [[b'{"Output":"0"}', b'{"Output":"1"}', b'{"Output":"2"}', b'{"Output":"3"}']]
    assert rendezvous._waiting == {}
    future = rendezvous.future(keys[2])  # all stored: done at once, nothing registered
    assert future.get(timeout=0).output == "2" and rendezvous._waiting == {}
    # every key stored, one of them twice: read in the keys' order, nothing registered
    assert rendezvous.wait([keys[2], keys[2], keys[0]], 0.001) == [b'{"Output":"2"}', b'{"Output":"2"}',
                                                                     b'{"Output":"0"}']
    assert rendezvous._waiting == {}
    with pytest.raises(Timeout):  # one not stored, and it never arrives
        rendezvous.wait([keys[0], log_key(pid, 9)], 0.01)
    assert rendezvous._waiting == {}
    store.close()
