"""The HTTP edge every productos service shares: error mapping, body limits, the bound on concurrent requests,
the drain state ``/health`` reads, keyset-pagination parameters and ``Link`` headers, route helpers, JSON bodies.
Services use ``both_slashes``, ``dump_json`` and the pagination names (also in ``productos.pagination``);
``create_service`` installs the rest."""

from productos.http.json import dump_json
from productos.http.pagination import After, Limit, next_link
from productos.http.routing import both_slashes

__all__ = ["After", "Limit", "both_slashes", "dump_json", "next_link"]
