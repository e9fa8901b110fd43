"""How much longer the fault and fuzz suites run: ``ACTORAO_SOAK=N`` (``make soak`` sets it) multiplies
their rounds, kills and fuzz examples by N. 1, the default, is what ``make test`` runs."""

from __future__ import annotations

import os

SOAK = max(1, int(os.environ.get("ACTORAO_SOAK", "1") or "1"))
