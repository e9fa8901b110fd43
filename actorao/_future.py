"""The project's own future: a ``concurrent.futures.Future`` whose waits raise ``actorao.Timeout``.

Every ``*_nowait`` call of the node returns one. ``get`` is ``result`` under the name pykka users
know; either takes a timeout in seconds.
"""

from __future__ import annotations

import concurrent.futures
from typing import TypeVar

from actorao._exceptions import Timeout

__all__ = ["Future"]

T = TypeVar("T")


class Future(concurrent.futures.Future[T]):
    """A result to come: an Ack once durable, a Result once evaluated."""

    def result(self, timeout: float | None = None) -> T:
        try:
            return super().result(timeout)
        except Timeout:
            raise
        except TimeoutError as exc:  # the wait ran out, not the work: say so in our own terms
            raise Timeout(f"no answer within {timeout} s") from exc

    def get(self, timeout: float | None = None) -> T:
        """``result`` by another name."""
        return self.result(timeout)
