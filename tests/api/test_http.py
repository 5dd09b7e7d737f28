"""The HTTP surface: catalog, health, metrics, and errors that never carry a trace."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.apiclient import Api


async def test_the_catalog_lists_points_and_data_schemas(api: Api) -> None:
    actions = {a["id"]: a for a in (await api.client.get("/api/actions")).json()["actions"]}
    assert 5 <= len(actions) <= 8
    assert actions["verify-email"]["points"] == 10 and actions["verify-email"]["data"] is None
    quiz = actions["quiz-basics"]["data"]["properties"]["correct"]
    assert (quiz["type"], quiz["minimum"], quiz["maximum"]) == ("integer", 7, 10)


async def test_health_and_readiness(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "postgres": True, "redis": True}


async def test_metrics_count_by_route_template_and_never_name_users(
    api: Api, new_user: Callable[[], str]
) -> None:
    user = new_user()
    await api.complete(user, "verify-email")
    await api.client.get(f"/api/leaderboard/users/{user}")
    text = (await api.client.get("/metrics")).text
    for name in (
        "leaderboard_http_requests_total",
        "leaderboard_http_request_duration_seconds_bucket",
        "leaderboard_completions_total",
        "leaderboard_rate_limited_total",
        "leaderboard_top10_changes_total",
        "leaderboard_redis_fallbacks_total",
        "leaderboard_db_pool_connections",
    ):
        assert name in text
    assert 'route="/api/leaderboard/users/{userId}"' in text
    assert 'leaderboard_completions_total{action="verify-email"}' in text
    assert user not in text


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/no/such/route", 404, "not_found"),
        ("DELETE", "/api/leaderboard", 405, "method_not_allowed"),
        ("GET", "/api/action/complete", 405, "method_not_allowed"),
    ],
)
async def test_unknown_routes_and_methods_answer_in_the_error_format(
    api: Api, method: str, path: str, status: int, code: str
) -> None:
    response = await api.client.request(method, path)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_an_unexpected_failure_is_a_500_without_a_trace(
    api: Api, new_user: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals: /srv/app/db.py line 42")

    monkeypatch.setattr(api.services.leaderboard, "complete", explode)
    transport = api.client._transport
    raise_app_exceptions = transport.raise_app_exceptions  # type: ignore[attr-defined]
    transport.raise_app_exceptions = False  # type: ignore[attr-defined]  # as a real server
    try:
        response = await api.complete(new_user(), "verify-email")
    finally:
        transport.raise_app_exceptions = raise_app_exceptions  # type: ignore[attr-defined]
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "internal_error", "message": "an unexpected error occurred"}
    }
    assert "secret" not in response.text


async def test_the_openapi_schema_documents_the_contract(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    complete = schema["paths"]["/api/action/complete"]["post"]
    body = complete["requestBody"]["content"]["application/json"]["schema"]
    by_action = {alt["properties"]["actionId"]["const"]: alt for alt in body["oneOf"]}
    assert by_action.keys() == api.services.catalog.actions.keys()
    assert by_action["verify-email"]["properties"]["data"]["maxProperties"] == 0
    assert by_action["quiz-basics"]["properties"]["data"]["required"] == ["correct"]
    assert {"200", "400", "401", "413", "429", "503"} <= complete["responses"].keys()
