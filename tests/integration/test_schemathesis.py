"""API fuzzing with schemathesis against the live service: gunicorn with the tuned configuration on PostgreSQL.

Every operation of ``/openapi.json`` gets schemathesis' examples, coverage (boundary and invalid values) and
fuzzing phases; the stateful test follows the OpenAPI links (``POST /productos`` → get, replace, update, delete
the product created, with its ETag as If-Match). The checks: no 5xx, and each response's status, content type
and body as the schema declares them. Bounded for CI: fixed example counts, derandomized (the same cases on
every run), one worker on a database of the module's own with a small pool.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from productos.services.productos.app import create_app
from tests.integration.servers import Gunicorn

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
]
#: Per operation, for the fuzzing phase (the examples and coverage phases add their own, bounded, cases).
MAX_EXAMPLES = 50
HYPOTHESIS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
STATEFUL = settings(
    max_examples=30,
    stateful_step_count=8,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def server(workdir: Path, database_url: str) -> Iterator[Gunicorn]:
    env = {
        "DATABASE_URL": database_url,
        "DB_POOL_SIZE": "2",
        "DB_MAX_OVERFLOW": "2",
        # The access line of every fuzzed request would only slow the run; errors are still logged.
        "PRODUCTOS_ACCESS_LOG": "false",
    }
    with Gunicorn(workdir, env, workers=1) as server:
        yield server
    # A 5xx fails its case already; this catches an error logged without one (after the response began).
    assert "unhandled error" not in server.output()


def _schema() -> Any:
    # The document the app serves, built in process at collection so that pytest gets one test per operation
    # (schemathesis.pytest.from_fixture, which would load it from the server, needs pytest < 9.2);
    # test_the_live_document_is_the_one_fuzzed checks that the server serves this very document.
    schema = schemathesis.openapi.from_dict(create_app().openapi())
    schema.config.checks.update(included_check_names=CHECKS)
    schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True)
    return schema


api_schema = _schema()


@api_schema.parametrize()
@HYPOTHESIS
def test_every_operation_answers_as_declared(case: Any, server: Gunicorn) -> None:
    case.call_and_validate(base_url=server.base_url, timeout=10)


def test_the_live_document_is_the_one_fuzzed(server: Gunicorn) -> None:
    assert httpx.get(f"{server.base_url}/openapi.json", timeout=10).json() == api_schema.raw_schema


def test_the_schema_has_every_operation_and_its_links() -> None:
    """What the fuzzing covers: every operation, and links from each product response to the item operations."""
    operations = {(op.method.upper(), op.path) for op in (r.ok() for r in api_schema.get_all_operations())}
    assert operations == {
        ("GET", "/"),
        ("GET", "/health"),
        ("GET", "/health/live"),
        ("GET", "/productos"),
        ("POST", "/productos"),
        ("GET", "/productos/{producto_id}"),
        ("PUT", "/productos/{producto_id}"),
        ("PATCH", "/productos/{producto_id}"),
        ("DELETE", "/productos/{producto_id}"),
    }
    created = api_schema.raw_schema["paths"]["/productos"]["post"]["responses"]["201"]["links"]
    assert {link["operationId"] for link in created.values()} == {
        "productos_get",
        "productos_replace",
        "productos_update",
        "productos_delete",
    }


def test_stateful_sequences_follow_the_links(server: Gunicorn) -> None:
    calls: list[tuple[str, int]] = []

    class Workflow(api_schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": server.base_url, "timeout": 10}

        def after_call(self, response: Any, case: Any) -> None:
            calls.append((f"{case.method} {case.path}", response.status_code))

    Workflow.run(settings=STATEFUL)
    # The links were followed, and the writes they lead to succeeded with the ETag as If-Match.
    succeeded = {call for call, status in calls if status < 300}
    assert {
        "POST /productos",
        "GET /productos/{producto_id}",
        "PUT /productos/{producto_id}",
        "PATCH /productos/{producto_id}",
        "DELETE /productos/{producto_id}",
    } <= succeeded, str(sorted(Counter(calls).items()))
    assert all(status < 500 for _, status in calls), calls
