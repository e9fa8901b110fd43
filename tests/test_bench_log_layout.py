"""bench/log_layout.py: each layout it compares keeps every entry once, where its keys say, and reads
each process's whole log back by its own path, so that the pages, bytes and reads it reports are those
of a whole log."""

from __future__ import annotations

import pytest

from bench.log_layout import LAYOUTS, run


@pytest.mark.parametrize("order", ["round-robin", "random"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_keeps_each_spawn_and_message_once(layout: str, order: str) -> None:
    found = run(layout, 40, 600, 100, order, size=100, sync=False)
    kept = 40 + 600  # a spawn per process, then the messages
    entries = found["entries"]
    assert isinstance(entries, dict)
    assert entries["log"] == entries["messages"] == kept
    if layout == "today":
        assert set(entries) == {"log", "messages"}
    else:  # each process's slots are indexed apart, and numbered processes are named once
        assert entries["slots"] == kept
        assert entries.get("numbers") == (40 if layout == "append-numbered" else None)
    assert found["written_bytes"] > 0 and found["messages"] == 600
    # every process's whole log read back by the layout's own path: all 40 of them, every entry
    assert found["read_entries"] == kept and isinstance(found["read_us"], float) and found["read_us"] > 0
