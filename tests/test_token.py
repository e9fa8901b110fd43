"""The token workload: 100 wallet processes paying each other through a token process (C modules
built with ziglang), cross-process through the messenger; once plainly and once with a worker
SIGKILLed midway. Supply is conserved and every balance equals the reference model."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import orjson

from actorao import Node, examples

ACCOUNTS = 100
START = 1000
TRANSFERS = 1000


def plan(seed: int) -> list[tuple[int, int, int]]:
    """Random (payer, payee, quantity) transfers; no payer spends more than it starts with, so every
    transfer succeeds in any order and the final balances do not depend on timing."""
    rng = random.Random(seed)
    budget = [START] * ACCOUNTS
    transfers = []
    while len(transfers) < TRANSFERS:
        payer, payee = rng.randrange(ACCOUNTS), rng.randrange(ACCOUNTS)
        quantity = rng.randint(1, 20)
        if payer != payee and budget[payer] >= quantity:
            budget[payer] -= quantity
            transfers.append((payer, payee, quantity))
    return transfers


def run(path: Path, kill_midway: bool) -> tuple[dict[str, int], list[int], int]:
    transfers = plan(7)
    with Node(path, workers=2) as node:
        token = node.spawn(examples.c_wasm("token"))
        wallets = [node.spawn(examples.c_wasm("wallet")) for _ in range(ACCOUNTS)]
        node.results(node.send_many([(token, {"Action": "Mint", "Recipient": w, "Quantity": START}, "")
                                     for w in wallets]))
        payments = [(wallets[a], {"Action": "Pay", "Token": token, "Recipient": wallets[b], "Quantity": q}, "")
                    for a, b, q in transfers]
        node.send_many(payments[: TRANSFERS // 2])
        if kill_midway:
            time.sleep(0.05)
            victim = node._pool.supervisor.pid_of("worker-1")
            assert victim is not None
            os.kill(victim, signal.SIGKILL)
        node.send_many(payments[TRANSFERS // 2 :])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until the token has taken every transfer
            entries = [orjson.loads(body) for _, body in node._logs.log_range(token, 1, 1 << 40)]
            if sum({"name": "Action", "value": "Transfer"} in e["Tags"] for e in entries) == TRANSFERS:
                break
            time.sleep(0.05)
        balances = {w: int(node.dry_run(token, {"Action": "Balance", "Account": w}).output) for w in wallets}
        total = int(node.dry_run(token, {"Action": "Total"}).output)
        for _ in range(1200):  # and every wallet has its notices
            notices = [sum(map(int, node.dry_run(w, {"Action": "Count"}).output.split()[:2])) for w in wallets]
            if sum(notices) == 2 * TRANSFERS:
                break
            time.sleep(0.05)
        assert node.undelivered() == []
        return balances, notices, total


def expected(wallet_ids: list[str]) -> dict[str, int]:
    model = [START] * ACCOUNTS
    for payer, payee, quantity in plan(7):
        model[payer] -= quantity
        model[payee] += quantity
    return dict(zip(wallet_ids, model, strict=True))


def test_random_transfers_conserve_supply_and_match_the_model_with_and_without_a_worker_kill(
    tmp_path: Path,
) -> None:
    outcomes = []
    for kill in (False, True):
        balances, notices, total = run(tmp_path / f"node-{kill}", kill)
        assert total == ACCOUNTS * START
        assert list(balances.values()) == list(expected(list(balances)).values())
        assert sum(notices) == 2 * TRANSFERS  # a Debit-Notice and a Credit-Notice per transfer, once
        outcomes.append(list(balances.values()))
    assert outcomes[0] == outcomes[1]
