"""Hostile modules on a shared worker: a message that loops forever, grows memory past its limit,
recurses without end, or a module whose start function spins. Each gets an Error (or, for the start
function, its spawn is refused) while a neighbour on the same worker keeps getting its results, and
every process still verifies from its log. Waits are on results, with generous timeouts: never on time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from actorao import ComputeLimitExceeded, Node, examples
from tests.soak import SOAK

# Memory: the word at 0 says the spawn ran; the heap pointer lives at 16 (state in memory, not in
# unexported globals, so checkpoints and rollback carry it); the reply sits at 1024.
_MODULE = """(module
  (memory (export "memory") 2)
  (data (i32.const 16) "\\00\\00\\01\\00")
  (data (i32.const 1024) "{\\"ok\\":true,\\"response\\":{\\"Output\\":\\"fine\\"}}\\00")
  (func (export "malloc") (param $size i32) (result i32)
    (local $p i32) (local $end i32)
    (local.set $p (i32.load (i32.const 16)))
    (local.set $end (i32.add (local.get $p) (local.get $size)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))))
    (i32.store (i32.const 16) (local.get $end))
    (local.get $p))
  (func $recurse (param $n i32) (result i32)
    (i32.add (call $recurse (i32.add (local.get $n) (i32.const 1))) (i32.const 1)))
  (func $spin (loop $forever (br $forever)))
  (func (export "handle") (param $msg i32) (param $env i32) (result i32)
    (if (i32.load (i32.const 0)) (then %s))
    (i32.store (i32.const 0) (i32.const 1))
    (i32.store (i32.const 16) (i32.const 65536))
    (i32.const 1024))
  %s)"""

HOSTILE = {  # every message after its spawn does this; the Error it must get
    "loop": ("(call $spin)", "ComputeLimitExceeded"),
    "grow": ("(loop $more (br_if $more (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))) unreachable",
             "MemoryLimitExceeded"),
    "recurse": ("(drop (call $recurse (i32.const 0)))", "Trap"),
}
LIMITS = {"Compute-Limit": "20000000", "Memory-Limit": "4-mb"}


def test_hostile_messages_get_errors_and_their_neighbour_carries_on(tmp_path: Path) -> None:
    with Node(tmp_path / "node", workers=1, schedulers=1) as node:  # one worker: everyone shares it
        neighbour = node.spawn(examples.wasm("counter"))
        hostile = {name: node.spawn(_MODULE % (body, ""), LIMITS) for name, (body, _) in HOSTILE.items()}
        rounds = 3 * SOAK
        hostile_acks, neighbour_acks = [], []
        for _ in range(rounds):
            hostile_acks += [(name, node.send(pid, {"Action": "Go"})) for name, pid in hostile.items()]
            neighbour_acks += node.send_many([(neighbour, {"Action": "Inc"}, "")] * 5)
        # The neighbour's results come, in order, each exactly once.
        assert [int(r.output) for r in node.results(neighbour_acks, timeout=120)] == list(range(1, 5 * rounds + 1))
        for (name, _ack), result in zip(hostile_acks, node.results([a for _, a in hostile_acks], timeout=120),
                                       strict=True):
            assert result.error is not None and result.error.startswith(HOSTILE[name][1]), (name, result.error)
        # Each hostile process rolled back to its state after the spawn, and still answers.
        for pid in hostile.values():
            assert node.result(pid).output == "fine"
            assert node.dry_run(pid, {"Action": "Get"}).error is not None  # a dry run is hostile too
        # A module whose start function spins is refused at its spawn, naming why; nothing is stored.
        before = node.processes()
        with pytest.raises(ComputeLimitExceeded, match="instantiation ran out of fuel"):
            node.spawn(_MODULE % ("", "(start $spin)"), LIMITS)
        assert node.processes() == before
        assert node.result(node.send(neighbour, {"Action": "Inc"}), timeout=60).output == str(5 * rounds + 1)
        for pid in [neighbour, *hostile.values()]:
            report = node.verify(pid)
            assert report.ok, report.summary()
