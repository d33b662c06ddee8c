"""The live server against its own OpenAPI schema (schemathesis, issue 13's acceptance):
every generated request to every operation gets no 5xx, and every response matches the
schema (status code documented, body valid, content type right). On SQLite and PostgreSQL,
with a store holding runs (a success, a failure, a queued one).

Every default check runs except `positive_data_acceptance`: a value the schema allows may
still name nothing the server can use (an opaque cursor that is not one, a task id the run
lacks): that is a 422/404 with the reason, which the acceptance asks for, not a defect.

Driven through schemathesis' Python API (each operation's hypothesis strategy) rather than
its pytest plugin, whose fixture loader does not run on pytest 9."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from cadenza.core.security import Role
from cadenza.engine.api import run_pipeline
from cadenza.store.security import security_store
from tests.fixtures.server import LiveServer
from tests.fixtures.waiting import wait_for

EXAMPLES = 25
# Operations that hash or verify a password (argon2id, slow on purpose: ~40% of this test's
# time with 25 examples each): every example takes the same path through the hash, so a few
# do. Their schema checks are the same as every other operation's.
PASSWORD_OPERATIONS = {"POST /api/v1/auth/login", "POST /api/v1/users",
                       "PATCH /api/v1/users/{name}"}
PASSWORD_EXAMPLES = 8


@pytest.mark.response_cache
def test_no_5xx_and_every_response_matches_the_schema(api_server: LiveServer) -> None:
    plans = api_server.app.state.catalog.get()
    run_pipeline(plans.get("etl"), {"n": 2}, executor="inline", settings=api_server.settings)
    run_pipeline(plans.get("gated"), {"gate": str(api_server.root / "closed")},
                 executor="inline", settings=api_server.settings)
    api_server.client.post("/api/v1/pipelines/plain/runs", json={})
    # Auth on from the start, every call as an admin: otherwise the first generated
    # POST /users would turn auth on half-way and leave every later operation at 401.
    sec = security_store(api_server.store)
    sec.create_user("schemathesis-admin-7f3", Role.ADMIN, password=None)
    auth = {"Authorization": f"Bearer {sec.create_token('schemathesis-admin-7f3').token}"}
    wait_for(lambda: api_server.client.get("/api/v1/runs").status_code == 401,
             what="auth to be on")
    # FastAPI builds the document on its first request and keeps it: build it here, where
    # the client waits up to 60 s (schemathesis' own fetch gives up after 10 s, which a
    # loaded machine exceeded once).
    assert api_server.client.get("/api/v1/openapi.json").status_code == 200
    schema = schemathesis.openapi.from_url(f"{api_server.base_url}/api/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]
    failures: list[str] = []
    assert PASSWORD_OPERATIONS <= {op.label for op in operations}
    for operation in operations:

        examples = PASSWORD_EXAMPLES if operation.label in PASSWORD_OPERATIONS else EXAMPLES

        @given(case=operation.as_strategy())
        @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            response = case.call_and_validate(base_url=api_server.base_url, headers=auth,
                                              excluded_checks=[positive_data_acceptance])
            # The admin's token works everywhere: a 401 is a wrong login and nothing else.
            assert response.status_code != 401 or case.path == "/api/v1/auth/login", (
                f"{case.method} {case.formatted_path}: {response.text}")

        try:
            check()
        except Exception as exc:  # noqa: BLE001 - collected: one report for every operation
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
