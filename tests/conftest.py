"""Shared fixtures: real nodes on real LMDB files in a tmp dir, with real worker processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from actorao import Node, examples


@pytest.fixture(params=[1, 2], ids=["workers=1", "workers=2"])
def workers(request: pytest.FixtureRequest) -> int:
    """Every node test runs on one worker and one scheduler shard, and on two of each, as pykka's
    suite runs on each runtime."""
    return int(request.param)


@pytest.fixture
def make_node(tmp_path: Path, workers: int) -> Iterator[Callable[..., Node]]:
    """Open nodes on ``tmp_path/node`` (or a given path); every one is closed at teardown."""
    opened: list[Node] = []

    def make(path: Path | None = None, **options: Any) -> Node:
        options.setdefault("workers", workers)
        options.setdefault("schedulers", workers)
        node = Node(path or tmp_path / "node", **options)
        opened.append(node)
        return node

    yield make
    for node in opened:
        node.close()


@pytest.fixture
def counter() -> bytes:
    return examples.wasm("counter")


@pytest.fixture
def trapper() -> bytes:
    return examples.wasm("trapper")
