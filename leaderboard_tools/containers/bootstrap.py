"""What the operator does at a cluster's bootstrap, done once by ``make chart-up``.

No API server runs there, so the operator's pod only waits for one. Its first acts are
done here with the operator's own definitions (:mod:`leaderboard.operator.provision`): the
bootstrap member (ordinal 0) is labelled primary and the others replica (the ``-rw``/``-ro``
routing follows the labels), the application's role, database and ``<cluster>-app`` Secret
are created once the primary answers, and the synchronous standby set once a standby
streams. No failover happens here: that is tested on kmock.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterable

from leaderboard.operator import provision
from leaderboard_tools.containers.engine import Engine
from leaderboard_tools.containers.kubelet import Doc, Objects, Pod

ROLE_LABEL = "leaderboard.dev/role"
CLUSTER_LABEL = "leaderboard.dev/cluster"


def say(line: str) -> None:
    """One progress line of chart-up, on stderr (stdout's last line is its JSON)."""
    print(f"chart-up: {line}", file=sys.stderr, flush=True)


def clusters(pods: Iterable[Pod]) -> list[tuple[str, list[Pod]]]:
    """PostgreSQL clusters: their members (StatefulSet pods with the cluster label)."""
    found: dict[str, list[Pod]] = {}
    for pod in pods:
        cluster = pod.labels.get(CLUSTER_LABEL)
        if cluster and pod.owner.startswith("StatefulSet/"):
            found.setdefault(cluster, []).append(pod)
    return sorted(found.items())


def label_roles(pods: Iterable[Pod]) -> None:
    """The operator's first act: the bootstrap member (ordinal 0) is the primary."""
    for cluster, members in clusters(pods):
        for pod in members:
            pod.labels[ROLE_LABEL] = "primary" if pod.name == f"{cluster}-0" else "replica"
        say(f"operator stand-in: {cluster}-0 labelled primary, the other members replica")


def placeholders(pods: Iterable[Pod]) -> dict[str, dict[str, str]]:
    """The Secrets the operator will create, for the dry run of every pod spec."""
    keys = ("username", "password", "dbname", "host", "port", "uri")
    return {f"{cluster}-app": dict.fromkeys(keys, "") for cluster, _ in clusters(pods)}


def serves_tls(docs: list[Doc], cluster: str) -> bool:
    """Whether the PostgresCluster's members serve TLS (``spec.tls``)."""
    return any(
        doc["kind"] == "PostgresCluster"
        and doc["metadata"]["name"] == cluster
        and (doc.get("spec") or {}).get("tls")
        for doc in docs
    )


def _psql(engine: Engine, pod: str, password: str, query: str) -> str | None:
    """One query as the superuser inside the member's container; None if it failed."""
    done = engine.run(
        "exec", "--env", "PGPASSWORD", pod, "psql", "-h", "127.0.0.1", "-U", "postgres",
        "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", query,
        check=False, timeout=30, env={**engine.env, "PGPASSWORD": password},
    )  # fmt: skip
    return done.stdout.strip() if done.returncode == 0 else None


async def provision_clusters(
    engine: Engine, docs: list[Doc], objects: Objects, pods: list[Pod], namespace: str
) -> None:
    """Provision what the operator would, once each cluster's primary answers (the ``-app``
    Secret goes into ``objects``, where the API's pod finds it)."""
    for cluster, members in clusters(pods):
        primary = next(p for p in members if p.labels.get(ROLE_LABEL) == "primary")
        creds = objects.secrets[f"{cluster}-credentials"]

        async def sql(
            query: str, pod: str = primary.name, password: str = creds["superuser-password"]
        ) -> str | None:
            return await asyncio.to_thread(_psql, engine, pod, password, query)

        async def until(query: str, good: Callable[[str | None], bool]) -> None:
            while True:
                if good(await sql(query)):
                    return
                await asyncio.sleep(0.5)

        await until("SELECT pg_is_in_recovery()", lambda answer: answer == "f")
        user, password = creds.get("app-username", "leaderboard"), creds["app-password"]
        database = creds.get("app-database", "leaderboard")
        await sql(provision.role_sql(user, password))
        if not await sql(provision.database_exists_sql(database)):
            await sql(provision.create_database_sql(database, user))
        objects.secrets[f"{cluster}-app"] = provision.app_secret(
            cluster, namespace, user, password, database, tls=serves_tls(docs, cluster)
        )
        say(f"operator stand-in: {cluster}-app Secret, role and database provisioned")
        if len(members) > 1:
            streaming = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
            await until(streaming, lambda answer: answer not in (None, "0"))
            await sql(provision.sync_standbys_sql(provision.SYNC_STANDBYS))
            await sql("SELECT pg_reload_conf()")
            say(f"operator stand-in: synchronous_standby_names = '{provision.SYNC_STANDBYS}'")
