"""The HTTP edge every productos service shares: error mapping, body limits, the bound on concurrent requests,
the drain state ``/health`` reads, keyset-pagination parameters and ``Link`` headers, route helpers, JSON bodies,
and the OpenAPI conventions.

Services use ``both_slashes``, ``dump_json``, the pagination names (also in ``productos.pagination``), and for
their OpenAPI document ``ErrorBody`` and ``error_responses`` (the ``{"detail": str}`` errors a route declares);
``create_service`` installs the rest, ``operation_id`` (``things_list``, ``things_get``...) included."""

from productos.http.errors import ErrorBody, error_responses
from productos.http.json import dump_json
from productos.http.pagination import After, Limit, next_link
from productos.http.routing import both_slashes, operation_id

__all__ = ["After", "ErrorBody", "Limit", "both_slashes", "dump_json", "error_responses", "next_link", "operation_id"]
