"""The chart's connections: TLS by default (a certificate that names every Service, one CA
every client verifies against), a Redis user per component with exactly the rules of
``leaderboard.cache.acl``, a managed PostgreSQL with no cluster of ours, and plaintext only
when asked for."""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

from cryptography import x509
from helm_python import Chart

from leaderboard.cache import acl
from leaderboard.cache.keys import Keys
from tests.chart.test_chart import PROFILES, by_kind, chart, render

__all__ = ["chart"]  # the fixture

FULL = "lb-leaderboard"
CA = "/etc/leaderboard/tls/ca.crt"


def _named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    return doc


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = workload["spec"]["template"]["spec"]["containers"][0]
    return container


def _env(workload: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in _container(workload)["env"]}


def _mounts(workload: dict[str, Any]) -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in _container(workload).get("volumeMounts", [])}


def test_by_default_every_client_verifies_tls_as_its_own_user(chart: Chart) -> None:
    docs = render(chart, {})
    for component in ("api", "broadcaster"):
        workload = _named(docs, "Deployment", f"{FULL}-{component}")
        env = _env(workload)
        assert env["LEADERBOARD_REDIS_URL"] == (
            f"rediss://{component}:$(REDIS_PASSWORD)@{FULL}-redis:6379/0?ssl_ca_certs={CA}"
        )
        assert env["REDIS_PASSWORD"]["secretKeyRef"] == {
            "name": f"{FULL}-redis", "key": f"{component}-password",
        }  # fmt: skip
        assert _mounts(workload)["/etc/leaderboard/tls"] == "ca"
    api = _env(_named(docs, "Deployment", f"{FULL}-api"))
    assert api["PGSSLROOTCERT"] == CA
    assert api["LEADERBOARD_DATABASE_URL"]["secretKeyRef"]["name"] == f"{FULL}-pg-app"

    redis = _container(_named(docs, "StatefulSet", f"{FULL}-redis"))
    args = redis["args"]
    assert args[args.index("--port") + 1] == "0"  # no plaintext port
    assert args[args.index("--tls-port") + 1] == "6379"
    assert "--tls" in redis["readinessProbe"]["exec"]["command"]

    pg = _named(docs, "StatefulSet", f"{FULL}-pg")
    command = _container(pg)["command"]
    assert "ssl=on" in command and "ssl_key_file=/tls/tls.key" in command
    pg_env = _env(pg)
    assert (pg_env["PG_TLS"], pg_env["PGSSLMODE"]) == ("on", "verify-full")
    (tls_volume,) = [v for v in pg["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls"]
    assert tls_volume["secret"]["defaultMode"] == 0o640
    (cluster,) = by_kind(docs, "PostgresCluster")
    assert cluster["spec"]["tls"] == {"secretName": f"{FULL}-tls"}


def test_the_generated_certificate_names_every_service_and_chains_to_the_ca(
    chart: Chart,
) -> None:
    secret = _named(render(chart, {}), "Secret", f"{FULL}-tls")
    assert secret["type"] == "kubernetes.io/tls"
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    ca = x509.load_pem_x509_certificate(data["ca.crt"])
    cert = x509.load_pem_x509_certificate(data["tls.crt"])
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = set(sans.get_values_for_type(x509.DNSName))
    assert {
        f"{FULL}-pg-rw", f"{FULL}-pg-rw.shop.svc", f"{FULL}-pg-rw.shop.svc.cluster.local",
        f"{FULL}-redis", f"{FULL}-redis.shop.svc", f"*.{FULL}-pg-hl.shop.svc",
    } <= names  # fmt: skip
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)


def test_the_redis_users_have_exactly_the_rules_of_the_code(chart: Chart) -> None:
    secret = _named(render(chart, {}), "Secret", f"{FULL}-redis")["stringData"]
    passwords = {c: secret[f"{c}-password"] for c in acl.COMPONENTS}
    assert secret["users.acl"] == acl.acl_file(secret["default-password"], passwords, Keys())
    assert len(set(passwords.values()) | {secret["default-password"]}) == 3  # all different


def test_a_managed_postgresql_deploys_no_cluster_and_no_operator(chart: Chart) -> None:
    docs = render(chart, PROFILES["managed"])
    assert not by_kind(docs, "PostgresCluster")
    assert [d["metadata"]["name"] for d in by_kind(docs, "StatefulSet")] == []
    assert f"{FULL}-operator" not in {d["metadata"]["name"] for d in by_kind(docs, "Deployment")}
    api = _named(docs, "Deployment", f"{FULL}-api")
    env = _env(api)
    assert env["LEADERBOARD_DATABASE_URL"]["secretKeyRef"] == {"name": "shop-db", "key": "uri"}
    assert env["LEADERBOARD_REDIS_URL"]["secretKeyRef"] == {"name": "shop-redis", "key": "url"}
    assert env["PGSSLROOTCERT"] == "/etc/leaderboard/postgres-ca/ca.crt"
    assert _mounts(api)["/etc/leaderboard/postgres-ca"] == "postgres-ca"
    ca = _named(docs, "ConfigMap", f"{FULL}-postgres-ca")
    assert ca["data"]["ca.crt"].startswith("-----BEGIN CERTIFICATE-----")
    # a URI given inline becomes the chart's own Secret
    assert not [d for d in by_kind(docs, "Secret") if d["metadata"]["name"] == f"{FULL}-tls"]
    assert "/etc/leaderboard/tls" not in _mounts(api)  # no server of ours to verify
    inline = render(chart, {"postgres": {"external": {"uri": "postgresql://u:p@db.example/lb"}}})
    secret = _named(inline, "Secret", f"{FULL}-database")
    assert secret["stringData"]["uri"] == "postgresql://u:p@db.example/lb"


def test_plaintext_only_when_asked_and_still_with_passwords(chart: Chart) -> None:
    docs = render(chart, PROFILES["plaintext"])
    env = _env(_named(docs, "Deployment", f"{FULL}-api"))
    assert env["LEADERBOARD_REDIS_URL"] == f"redis://api:$(REDIS_PASSWORD)@{FULL}-redis:6379/0"
    assert "PGSSLROOTCERT" not in env
    redis = _container(_named(docs, "StatefulSet", f"{FULL}-redis"))
    assert "--tls-port" not in redis["args"] and "--aclfile" in redis["args"]
    assert "ssl=on" not in _container(_named(docs, "StatefulSet", f"{FULL}-pg"))["command"]
    assert "tls" not in by_kind(docs, "PostgresCluster")[0]["spec"]
    assert not [d for d in by_kind(docs, "Secret") if d["metadata"]["name"] == f"{FULL}-tls"]


def test_cert_manager_issues_the_certificate_instead(chart: Chart) -> None:
    docs = render(chart, PROFILES["cert-manager"])
    (certificate,) = by_kind(docs, "Certificate")
    assert certificate["spec"]["secretName"] == f"{FULL}-tls"
    assert certificate["spec"]["issuerRef"]["name"] == "ca-issuer"
    assert f"{FULL}-pg-rw.shop.svc" in certificate["spec"]["dnsNames"]
    assert not [d for d in by_kind(docs, "Secret") if d["metadata"]["name"] == f"{FULL}-tls"]
