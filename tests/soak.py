"""How much longer the fault and fuzz suites run: ``ACTORAO_SOAK=N`` (``make soak`` sets it) multiplies
their rounds, kills and fuzz examples by N. 1, the default, is what ``make test`` runs."""

from __future__ import annotations

import os
import secrets

SOAK = max(1, int(os.environ.get("ACTORAO_SOAK", "1") or "1"))
# The kill suite's random moments: fixed for make test, fresh for each soak (ACTORAO_SOAK_SEED repeats one).
SEED = int(os.environ.get("ACTORAO_SOAK_SEED") or (2026 if SOAK == 1 else secrets.randbits(32)))
