"""The Helm chart, rendered and checked offline with the real tools: the Helm v4 SDK (render,
lint --strict), kubernetes-validate (official schemas of 1.29, 1.33 and 1.35), jsonschema (the
custom resource against its CRD), promtool (alert rules and their unit tests)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml
from helm_python import Chart

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "leaderboard"
KUBE_VERSIONS = ["1.29", "1.33", "1.35"]
CUSTOM = {"PostgresCluster", "ServiceMonitor", "PrometheusRule", "Certificate"}

PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "ha": {
        "postgres": {"instances": 3},
        "api": {"replicas": 3},
        "broadcaster": {"replicas": 3, "autoscaling": {"targetConnectionsPerPod": 8000}},
        "ingress": {"enabled": True, "className": "nginx", "tlsSecretName": "lb-tls"},
        "monitoring": {
            "serviceMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
            "dashboards": {"enabled": True},
        },
    },
    "minimal": {
        "api": {"replicas": 1, "autoscaling": {"enabled": False}},
        "broadcaster": {"replicas": 1, "autoscaling": {"enabled": False}},
        "redis": {"enabled": False, "externalUrl": "redis://redis.example:6379/0"},
        "networkPolicy": {"enabled": False},
        "topologySpread": False,
        "auth": {"algorithm": "RS256", "jwksUrl": "https://id.example/.well-known/jwks.json"},
    },
    "managed": {  # a managed PostgreSQL and a managed Redis over TLS: no cluster, no operator
        "postgres": {
            "external": {
                "existingSecret": "shop-db",
                "caCert": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            }
        },
        "redis": {"enabled": False, "externalUrlSecret": "shop-redis"},
    },
    "plaintext": {"tls": {"enabled": False}},
    "cert-manager": {"tls": {"certManager": {"enabled": True, "issuerRef": {"name": "ca-issuer"}}}},
}


@pytest.fixture(scope="module")
def chart() -> Iterator[Chart]:
    loaded = Chart.load(str(CHART))
    try:
        yield loaded
    finally:
        loaded.close()


def render(chart: Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    out = chart.render(values, name="lb", namespace="shop", is_install=True)
    docs: list[dict[str, Any]] = []
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_lint_is_clean_in_strict_mode(profile: str, kube: str) -> None:
    report = helm_python.lint(
        str(CHART), PROFILES[profile], strict=True, namespace="shop", kube_version=f"v{kube}.0"
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], (problems, report["errors"])


@pytest.mark.parametrize("profile", PROFILES)
def test_every_object_is_strictly_valid_for_each_kubernetes_version(
    chart: Chart, profile: str
) -> None:
    docs = render(chart, PROFILES[profile])
    crd = yaml.safe_load((CHART / "crds" / "postgresclusters.leaderboard.dev.yaml").read_text())
    for kube in KUBE_VERSIONS:
        kubernetes_validate.validate(crd, kube, strict=True)
        for doc in docs:
            if doc["kind"] in CUSTOM:
                continue
            try:
                kubernetes_validate.validate(doc, kube, strict=True)
            except kubernetes_validate.ValidationError as exc:
                name = f"{doc['kind']} {doc['metadata']['name']}"
                raise AssertionError(f"{name} ({kube}): {exc}") from None


@pytest.mark.parametrize("profile", PROFILES)
def test_the_postgres_cluster_is_valid_against_its_crd(chart: Chart, profile: str) -> None:
    crd = yaml.safe_load((CHART / "crds" / "postgresclusters.leaderboard.dev.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    clusters = by_kind(render(chart, PROFILES[profile]), "PostgresCluster")
    if profile == "managed":
        assert clusters == []  # a managed PostgreSQL: no cluster of ours
        return
    (cluster,) = clusters
    jsonschema.validate(cluster, schema)
    (sts,) = [s for s in by_kind(render(chart, PROFILES[profile]), "StatefulSet")
              if s["metadata"]["name"] == cluster["metadata"]["name"]]  # fmt: skip
    assert sts["spec"]["replicas"] == cluster["spec"]["instances"]


def test_profiles_render_what_they_promise(chart: Chart) -> None:
    ha = render(chart, PROFILES["ha"])
    kinds = {d["kind"] for d in ha}
    assert {"ServiceMonitor", "PrometheusRule", "Ingress", "NetworkPolicy"} <= kinds
    assert (
        len([d for d in by_kind(ha, "ConfigMap") if "grafana_dashboard" in d["metadata"]["labels"]])
        == 4
    )
    assert {h["spec"]["minReplicas"] for h in by_kind(ha, "HorizontalPodAutoscaler")} == {3}
    (ws_hpa,) = [
        h for h in by_kind(ha, "HorizontalPodAutoscaler") if "broadcaster" in h["metadata"]["name"]
    ]
    assert {"type": "Pods", "pods": {
        "metric": {"name": "leaderboard_ws_connections"},
        "target": {"type": "AverageValue", "averageValue": "8000"},
    }} in ws_hpa["spec"]["metrics"]  # fmt: skip
    default = render(chart, {})
    assert all(
        m["type"] == "Resource" for h in by_kind(default, "HorizontalPodAutoscaler")
        for m in h["spec"]["metrics"]
    )  # fmt: skip
    minimal = render(chart, PROFILES["minimal"])
    kinds = {d["kind"] for d in minimal}
    assert not {"HorizontalPodAutoscaler", "NetworkPolicy", "ServiceMonitor"} & kinds
    assert not [s for s in by_kind(minimal, "StatefulSet") if "redis" in s["metadata"]["name"]]
    (api,) = [d for d in by_kind(minimal, "Deployment") if d["metadata"]["name"].endswith("-api")]
    env = {
        e["name"]: e.get("value") for e in api["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["LEADERBOARD_REDIS_URL"] == "redis://redis.example:6379/0"
    assert env["LEADERBOARD_JWT_JWKS_URL"] == "https://id.example/.well-known/jwks.json"


def test_every_container_is_locked_down(chart: Chart) -> None:
    for doc in render(chart, PROFILES["ha"]):
        template = doc.get("spec", {}).get("template", {}).get("spec")
        pod = template or (doc["spec"] if doc["kind"] == "Pod" else None)
        if pod is None:
            continue
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {
                "drop": ["ALL"]
            }
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            assert c["resources"]["requests"] and c["resources"]["limits"], c["name"]


def test_no_pod_gets_service_link_variables(chart: Chart) -> None:
    # For the Service <release>-api Kubernetes sets LEADERBOARD_API_PORT=tcp://IP:80 in every
    # pod of the namespace: one of our settings, so the pods crash-looped (seen in chart-up).
    for doc in render(chart, PROFILES["ha"]):
        template = doc.get("spec", {}).get("template", {}).get("spec")
        pod = template or (doc["spec"] if doc["kind"] == "Pod" else None)
        if pod is not None:
            assert pod.get("enableServiceLinks") is False, doc["metadata"]["name"]


def test_broadcaster_grace_period_covers_its_drain(chart: Chart) -> None:
    docs = render(chart, {"broadcaster": {"drainSeconds": 40}})
    (ws,) = [
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("broadcaster")
    ]
    spec = ws["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["LEADERBOARD_WS_DRAIN_S"] == "40" and spec["terminationGracePeriodSeconds"] > 40


def test_api_readiness_does_not_follow_shared_dependencies(chart: Chart) -> None:
    """A Redis outage degrades the API (rank null), a failover makes it answer 503 for a
    second: neither may take every API pod out of its Service."""
    (api,) = [
        d
        for d in by_kind(render(chart, {}), "Deployment")
        if d["metadata"]["name"].endswith("-api")
    ]
    (container,) = api["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_the_start_script_is_the_one_the_local_stack_runs(chart: Chart) -> None:
    (scripts,) = [
        d
        for d in by_kind(render(chart, {}), "ConfigMap")
        if d["metadata"]["name"].endswith("-pg-scripts")
    ]
    local = ROOT / "leaderboard" / "operator"
    assert scripts["data"]["pg-member.sh"] == (local / "pg-member.sh").read_text()
    assert scripts["data"]["pg-cluster.conf"] == (local / "pg-cluster.conf").read_text()


def test_redis_starts_through_its_script_and_watches_its_certificates_with_tls(
    chart: Chart,
) -> None:
    for tls in (True, False):
        docs = render(chart, {"tls": {"enabled": tls}})
        (scripts,) = [
            d
            for d in by_kind(docs, "ConfigMap")
            if d["metadata"]["name"].endswith("-redis-scripts")
        ]
        script = ROOT / "charts" / "leaderboard" / "files" / "redis-start.sh"
        assert scripts["data"]["redis-start.sh"] == script.read_text()
        (redis,) = [
            d for d in by_kind(docs, "StatefulSet") if d["metadata"]["name"].endswith("-redis")
        ]
        (container,) = redis["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["bash", "/scripts/redis-start.sh"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env.get("TLS_DIR") == ("/tls" if tls else None)


BAD_VALUES: list[tuple[str, dict[str, Any]]] = [
    ("one PostgreSQL member is no HA", {"postgres": {"instances": 1}}),
    ("unknown durability", {"postgres": {"durability": "maybe"}}),
    ("replicas as a string", {"api": {"replicas": "three"}}),
    ("a typo in a key", {"api": {"replicaz": 3}}),
    ("RS256 without a key or JWKS URL", {"auth": {"algorithm": "RS256"}}),
    ("external Redis without a URL", {"redis": {"enabled": False}}),
    (
        "a managed PostgreSQL URI of another scheme",
        {"postgres": {"external": {"uri": "mysql://x"}}},
    ),
    ("cert-manager without an issuer", {"tls": {"certManager": {"enabled": True}}}),
    ("a bad storage size", {"postgres": {"storage": {"size": "lots"}}}),
    ("a bad CPU quantity", {"api": {"resources": {"limits": {"cpu": "fast"}}}}),
]


@pytest.mark.parametrize(("why", "values"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_values_are_rejected_by_the_schema(
    chart: Chart, why: str, values: dict[str, Any]
) -> None:
    with pytest.raises(helm_python.HelmError):
        chart.validate_schema(values)


def test_every_value_is_documented() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\s*[A-Za-z][A-Za-z0-9]*:\s*\S", line) and not line.strip().startswith("#"):
            if re.match(r"^\s*(requests|limits):", line):
                continue  # inside a documented `resources` value
            assert lines[i - 1].strip().startswith("# --"), f"values.yaml:{i + 1} {line.strip()}"


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_alert_links_to_a_runbook_section_that_exists() -> None:
    rules = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    for rule in rules["groups"][0]["rules"]:
        page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        path = ROOT / page
        assert path.exists() and anchor in _anchors(path), (rule["alert"], page, anchor)
    assert "when-it-does-not-fail-over" in _anchors(ROOT / "docs" / "runbook-failover.md")


def test_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: apt-get install prometheus (scripts/system-deps.sh)"
    check = subprocess.run(
        [promtool, "check", "rules", str(CHART / "files" / "alerts.yaml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(
        [promtool, "test", "rules", "alerts-test.yaml"],
        cwd=Path(__file__).parent, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_dashboards_are_current() -> None:
    import scripts.dashboards as dashboards

    for name, text in dashboards.render().items():
        assert (CHART / "files" / "dashboards" / name).read_text() == text, "run make docs"


def used_metric_names() -> set[str]:
    text = (CHART / "files" / "alerts.yaml").read_text()
    for path in (CHART / "files" / "dashboards").glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            text += " " + " ".join(t["expr"] for t in panel["targets"])
    names = set(re.findall(r"\bleaderboard_[a-z0-9_]+", text))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def test_the_connection_budget_holds_at_the_autoscalers_maximum(chart: Chart) -> None:
    docs = render(chart, {"api": {"autoscaling": {"maxReplicas": 10}}})
    api = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-api")
    )
    env = {
        e["name"]: e.get("value") for e in api["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    pool, workers = int(env["LEADERBOARD_DB_POOL_MAX"]), int(env["LEADERBOARD_API_WORKERS"])
    conf = (ROOT / "leaderboard" / "operator" / "pg-cluster.conf").read_text()
    limit = int(re.search(r"^max_connections\s*=\s*(\d+)", conf, re.M).group(1))  # type: ignore[union-attr]
    values = yaml.safe_load((CHART / "values.yaml").read_text())["postgres"]
    assert values["maxConnections"] == limit  # the value the check uses is the server's
    assert 10 * workers * pool <= limit - values["reservedConnections"]


@pytest.mark.parametrize(
    "values",
    [
        {"api": {"autoscaling": {"maxReplicas": 20}}},
        {"api": {"dbPoolMax": 32}},
        {"api": {"autoscaling": {"enabled": False}, "replicas": 12}},
        {"postgres": {"external": {"uri": "postgresql://a@b/c", "maxConnections": 50}}},
    ],
)
def test_a_render_that_overflows_the_database_is_refused_in_one_line(
    chart: Chart, values: dict[str, Any]
) -> None:
    with pytest.raises(helm_python.HelmError) as refused:
        render(chart, values)
    message = str(refused.value)
    assert "connection budget:" in message and "api.dbPoolMax" in message


def test_an_external_database_of_unknown_limit_is_not_checked(chart: Chart) -> None:
    docs = render(chart, {"postgres": {"external": {"uri": "postgresql://a@b/c"}}})
    assert any(d["kind"] == "Deployment" for d in docs)


def test_members_operator_and_redis_have_disruption_budgets(chart: Chart) -> None:
    docs = render(chart, {})
    budgets = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "PodDisruptionBudget"}
    workloads = {
        d["metadata"]["name"]: d["spec"]["selector"]["matchLabels"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    }
    for name, selector in workloads.items():
        assert name in budgets, f"{name} has no PodDisruptionBudget"
        assert budgets[name]["selector"]["matchLabels"] == selector
    members = next(n for n in workloads if n.endswith("-pg"))
    # Never two members at once: the primary and its synchronous standby stay together.
    assert budgets[members] == {**budgets[members], "maxUnavailable": 1}
    held = render(chart, {"redis": {"pdb": {"minAvailable": 1}}})
    redis = next(
        d
        for d in held
        if d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"].endswith("-redis")
    )
    assert redis["spec"]["minAvailable"] == 1 and "maxUnavailable" not in redis["spec"]
