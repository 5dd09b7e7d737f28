"""Property-based run over the OpenAPI schema: whatever the input, never a 5xx, always the
documented shapes. The API runs as its own uvicorn process, as in production."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from leaderboard import auth
from leaderboard.config import Settings
from leaderboard_tools.devstack.stack import Stack
from tests.apiclient import api_settings
from tests.support import free_ports, start_component


@pytest.fixture(scope="module")
def served_api(stack: Stack) -> Iterator[tuple[str, Settings]]:
    port = free_ports(1)[0]
    log = open(stack.run_dir / f"schemathesis-api-{port}.log", "wb")  # noqa: SIM115
    proc = start_component(stack, "api", port, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        yield url, api_settings(stack, api_port=port)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    assert b"Traceback" not in (stack.run_dir / f"schemathesis-api-{port}.log").read_bytes()


@pytest.fixture(scope="module")
def api_schema(served_api: tuple[str, Settings]) -> schemathesis.BaseSchema:
    url, _ = served_api
    return schemathesis.openapi.from_url(url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_api_fail_or_break_its_schema(
    case: schemathesis.Case, served_api: tuple[str, Settings]
) -> None:
    url, api = served_api
    token = auth.mint(api, f"fuzz-{uuid.uuid4().hex[:10]}")
    case.call_and_validate(base_url=url, headers={"Authorization": f"Bearer {token}"})
