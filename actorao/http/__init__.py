"""AO's HTTP API: the MU, SU and CU routes of legacynet and a gateway's GraphQL slice, so
``@permaweb/aoconnect`` (``connect({MODE: "legacy", MU_URL, CU_URL, GATEWAY_URL})``, all three set
to the node's URL) and other AO clients talk to an actorao node unchanged."""

from __future__ import annotations

from actorao.http._app import create_app
from actorao.http._server import HttpServer, serve_forever

__all__ = ["HttpServer", "create_app", "serve_forever"]
