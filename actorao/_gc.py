"""The cyclic garbage collector in the embedding program's process, while nodes are open.

A full collection walks every tracked object: the program's imports and the node's own structures,
tens of thousands of objects that live as long as the node. Under a stream, objects that outlive a
few collections (acks held until their results arrive) start one every few thousand messages, and
measured on ``noop`` those walks cost the caller's process about 2 µs a message, a fifth of its
whole share. So an open node keeps what was alive at its start in the permanent generation
(``gc.freeze``), which full collections skip; the last node to close gives it back. A program that
freezes objects itself is left alone (see ``NodeConfig.freeze_gc``).
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_holders = 0  # open nodes that froze


def freeze() -> bool:
    """Collect, then freeze what is alive; False (nothing done) if the program froze objects itself.
    Each True is to be paired with one ``thaw``."""
    global _holders
    with _lock:
        if _holders == 0 and gc.get_freeze_count():
            return False
        gc.collect()  # garbage frozen now would never be collected while a node is open
        gc.freeze()
        _holders += 1
        return True


def thaw() -> None:
    """One ``freeze`` fewer: when no open node froze, frozen objects are collected as before."""
    global _holders
    with _lock:
        _holders -= 1
        if _holders == 0:
            gc.unfreeze()
