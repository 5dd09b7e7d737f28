import pytest

from leaderboard.config import SettingsError, load_settings
from tests.support import cli


def test_defaults_match_the_documented_local_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("API_PORT", "WS_PORT", "REDIS_PORT", "PG_PORT", "PG_MEMBERS"):
        monkeypatch.delenv(f"LEADERBOARD_{var}", raising=False)
    s = load_settings()
    assert (s.api_port, s.ws_port, s.redis_port, s.pg_port, s.pg_members) == (
        8000,
        8001,
        6380,
        5433,
        2,
    )


def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADERBOARD_REDIS_PORT", "not-a-port")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value).startswith("invalid setting LEADERBOARD_REDIS_PORT='not-a-port'")


def test_out_of_range_member_count_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADERBOARD_PG_MEMBERS", "9")
    with pytest.raises(SettingsError, match="LEADERBOARD_PG_MEMBERS"):
        load_settings()


def test_prod_refuses_to_start_without_a_jwt_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADERBOARD_ENV", "prod")
    monkeypatch.delenv("LEADERBOARD_JWT_SECRET", raising=False)
    with pytest.raises(SettingsError, match="LEADERBOARD_JWT_SECRET is required"):
        load_settings()


def test_prod_starts_the_operator_without_a_jwt_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    # The chart gives the operator's pod no JWT secret: it verifies no token.
    monkeypatch.setenv("LEADERBOARD_ENV", "prod")
    monkeypatch.delenv("LEADERBOARD_JWT_SECRET", raising=False)
    assert load_settings(verifies_tokens=False).env == "prod"


def test_asymmetric_algorithm_needs_a_public_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADERBOARD_JWT_ALGORITHM", "RS256")
    with pytest.raises(SettingsError, match="LEADERBOARD_JWT_PUBLIC_KEY"):
        load_settings()


def test_the_cli_stops_with_one_clear_line_and_no_traceback() -> None:
    done = cli("status", env={"LEADERBOARD_API_PORT": "eighty"})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "LEADERBOARD_API_PORT='eighty'" in lines[0]
    assert "Traceback" not in done.stderr
