"""A process's nonce-ordered inbox: whatever order slots arrive in, they leave strictly in order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from actorao._exceptions import Overloaded

T = TypeVar("T")

Fill = Callable[[int, int], list[tuple[int, T]]]


class NonceInbox(Generic[T]):
    """Holds out-of-order arrivals and releases slot n, n+1, ... in order.

    A gap is filled at once through ``fill(first, last)``, which reads the durable log: the SU
    stores every assignment before it pushes it, so a missing slot is always there to read. Slots
    below the next expected one were delivered already and are dropped.
    """

    def __init__(self, next_slot: int, fill: Fill[T], high_water_mark: int = 100_000) -> None:
        self.next_slot = next_slot
        self._fill = fill
        self._held: dict[int, T] = {}
        self._high_water_mark = high_water_mark

    def __len__(self) -> int:
        return len(self._held)

    def offer(self, slot: int, item: T) -> list[tuple[int, T]]:
        """Take one arrival and return whatever is now deliverable, in slot order."""
        if slot < self.next_slot:
            return []
        if slot == self.next_slot and not self._held:
            self.next_slot += 1
            return [(slot, item)]
        if len(self._held) >= self._high_water_mark:
            raise Overloaded(f"inbox holds {len(self._held)} out-of-order slots, its high-water mark")
        self._held[slot] = item
        if self.next_slot not in self._held:
            return self.fill_to(slot - 1)
        return self._drain()

    def fill_to(self, last: int) -> list[tuple[int, T]]:
        """Read the gap up to ``last`` from the log; return what is now deliverable."""
        if last >= self.next_slot:
            for slot, item in self._fill(self.next_slot, last):
                self._held.setdefault(slot, item)
        return self._drain()

    def _drain(self) -> list[tuple[int, T]]:
        ready = []
        while self.next_slot in self._held:
            ready.append((self.next_slot, self._held.pop(self.next_slot)))
            self.next_slot += 1
        return ready
