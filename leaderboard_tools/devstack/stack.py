"""The local cluster: PostgreSQL members (one primary, synchronous standbys) and Redis.

:class:`Stack` knows how to build, start, stop and describe the cluster; it holds no loop of
its own (that is :mod:`leaderboard_tools.devstack.supervisor`). Its layout on disk::

    RUN_DIR/stack.json           ports and pids of the running stack (written by the supervisor)
    RUN_DIR/pg/memberN/data      PostgreSQL data directory of member N
    RUN_DIR/pg/memberN/sock      its private Unix socket directory
    RUN_DIR/redis/               Redis pid file, log (and ACL file in TLS mode)
    RUN_DIR/tls/                 TLS mode: the stack's CA, its certificate and key
    RUN_DIR/backups/             pgBackRest: configuration, folder repository (backups.py)
    RUN_DIR/dev-jwt.key, pg-*    generated secrets (mode 0600)
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg

from leaderboard import connection_urls, devsecrets
from leaderboard.cache.keys import Keys
from leaderboard.config import Settings
from leaderboard.db.migrate import migrate
from leaderboard.db.sql import ident, literal
from leaderboard.operator.pgbackrest import Repository
from leaderboard.operator.probe import sync_standbys
from leaderboard_tools.devstack.backups import Backups, repository
from leaderboard_tools.devstack.components import Component
from leaderboard_tools.devstack.postgres import Member, find_bin_dir
from leaderboard_tools.devstack.process import OsUser, StackError, wait_for
from leaderboard_tools.devstack.redis import RedisServer
from leaderboard_tools.devstack.rundir import MARKER, check_traversable, read_state

SYNC_STANDBYS = "ANY 1 (*)"


@dataclass(frozen=True)
class Layout:
    """What a running stack listens on; saved in stack.json so that later commands (status,
    down) find the stack even when run with other settings than ``up`` was."""

    host: str
    pg_port: int
    pg_members: int
    redis_port: int
    api_port: int
    ws_port: int
    pg_database: str
    pg_user: str
    tls: bool = False
    redis_prefix: str = ""
    # Chaos drills: (network namespace, address) of each member, which then runs on a host of
    # its own (leaderboard_tools.chaos); empty: every member on ``host``.
    member_hosts: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_settings(cls, s: Settings) -> Layout:
        return cls(
            s.host,
            s.pg_port,
            s.pg_members,
            s.redis_port,
            s.api_port,
            s.ws_port,
            s.pg_database,
            s.pg_user,
            s.tls,
            s.redis_prefix,
        )


class Stack:
    def __init__(
        self,
        run_dir: Path,
        layout: Layout,
        pg_bin_dir: Path | None = None,
        *,
        services: bool = False,
        backup_repo: Repository | None = None,
        archiving: bool = True,
    ) -> None:
        self.run_dir = run_dir
        self.archiving = archiving
        self.layout = layout
        self._pg_bin_dir = pg_bin_dir
        self.pg_os_user = OsUser.for_postgres()
        self.backups = Backups(run_dir, self.pg_os_user)
        self._backup_repo = backup_repo or Repository(path=run_dir / "backups" / "repo")
        # TLS mode: one CA and one certificate for the stack's address, shared by every member
        # and by Redis (all listen on the same host).
        self.tls = connection_urls.local_tls(run_dir) if layout.tls else None
        placed = [tuple(h) for h in layout.member_hosts]  # lists, once read from stack.json
        self.members = [
            Member(
                name=f"member{i}",
                port=layout.pg_port + i,
                base_dir=run_dir / "pg" / f"member{i}",
                bin_dir=Path("/nonexistent"),  # resolved on first build/start (status needs none)
                user=self.pg_os_user,
                host=placed[i][1] if i < len(placed) else layout.host,
                tls=self.tls,
                netns=placed[i][0] if i < len(placed) else None,
            )
            for i in range(layout.pg_members)
        ]
        self.redis = RedisServer(
            layout.redis_port,
            run_dir / "redis",
            host=layout.host,
            tls=self.tls,
            keys=Keys(layout.redis_prefix),
        )
        # The platform's own processes; the test harness runs the bare cluster without them.
        self.components: list[Component] = []
        if services:
            self.components += [
                Component("api", layout.host, layout.api_port, run_dir, self.service_env("api")),
                Component(
                    "broadcaster",
                    layout.host,
                    layout.ws_port,
                    run_dir,
                    self.service_env("broadcaster"),
                ),
            ]

    # -- construction

    @classmethod
    def from_settings(cls, settings: Settings, *, services: bool = False) -> Stack:
        """The stack described by a running stack's stack.json, else by the settings."""
        run_dir = settings.run_path
        state = read_state(run_dir)
        layout = Layout(**state["layout"]) if state is not None else Layout.from_settings(settings)
        return cls(
            run_dir,
            layout,
            settings.pg_bin_dir,
            services=services,
            backup_repo=repository(settings, run_dir),
            archiving=settings.backup_archiving,
        )

    @property
    def state_path(self) -> Path:
        return self.run_dir / "stack.json"

    # -- secrets and URLs

    @property
    def superuser_password(self) -> str:
        return devsecrets.read_or_create(devsecrets.pg_password_path(self.run_dir))

    @property
    def app_password(self) -> str:
        return devsecrets.read_or_create(devsecrets.app_password_path(self.run_dir))

    @property
    def api_url(self) -> str:
        return f"http://{self.layout.host}:{self.layout.api_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.layout.host}:{self.layout.ws_port}/ws"

    def database_url(self, member: Member) -> str:
        return member.dsn(
            user=self.layout.pg_user, password=self.app_password, database=self.layout.pg_database
        )

    def services_database_url(self) -> str:
        """Every member, ``target_session_attrs=read-write``: services follow the primary."""
        hosts = ",".join(f"{m.host}:{m.port}" for m in self.members)
        tls = connection_urls.pg_tls_query(self.tls, "&")
        return (
            f"postgresql://{self.layout.pg_user}:{self.app_password}@{hosts}/"
            f"{self.layout.pg_database}?target_session_attrs=read-write{tls}"
        )

    def service_env(self, component: str) -> dict[str, str]:
        """The environment of one of the platform's processes (its own Redis user)."""
        env = dict(os.environ)  # the user's LEADERBOARD_* settings reach the services too
        env.update(
            LEADERBOARD_RUN_DIR=str(self.run_dir),
            LEADERBOARD_HOST=self.layout.host,
            LEADERBOARD_API_PORT=str(self.layout.api_port),
            LEADERBOARD_WS_PORT=str(self.layout.ws_port),
            LEADERBOARD_DATABASE_URL=self.services_database_url(),
            LEADERBOARD_REDIS_URL=self.redis.url_for(component),
        )
        return env

    # -- lifecycle

    def prepare_run_dir(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / MARKER).touch()
        (self.run_dir / "pg").mkdir(exist_ok=True)
        if not self.pg_os_user.is_current:
            check_traversable(self.run_dir / "pg", self.pg_os_user)
        bin_dir = find_bin_dir(self._pg_bin_dir)
        self.backups.configure(self._backup_repo)
        for member in self.members:
            member.bin_dir = bin_dir
            member.extra_options = self.backups.archive_options(member) if self.archiving else []
        if self.tls is not None and not self.tls.exists:
            hosts = (
                [self.layout.host, "localhost"]
                if self.layout.host != "localhost"
                else ["localhost"]
            )
            hosts += [m.host for m in self.members if m.host not in hosts]
            self.tls.create(hosts, uid=self.pg_os_user.uid, gid=self.pg_os_user.gid)

    def configured_primary(self) -> Member | None:
        """The member whose data directory is not a standby's (None before the first build)."""
        built = [m for m in self.members if m.exists]
        if not built:
            return None
        primaries = [m for m in built if not m.configured_as_standby]
        if len(primaries) != 1:
            names = ", ".join(m.name for m in primaries) or "none"
            raise StackError(
                f"expected exactly one member configured as primary, found: {names}; "
                "run `leaderboard down --purge` to start over"
            )
        return primaries[0]

    async def start(self) -> Member:
        """Build what is missing, start everything, return once the cluster is ready."""
        self.prepare_run_dir()
        primary = self.configured_primary()
        if primary is None:
            primary = self.members[0]
            await asyncio.to_thread(self._initdb, primary)
            primary.start()
            await self._wait_accepting(primary)
            await self._bootstrap(primary)
        else:
            primary.start()
            await self._wait_accepting(primary)
        # Idempotent; until it exists every archive-push fails (and is retried).
        if self.archiving:
            await asyncio.to_thread(self.backups.create_stanza, primary)
        for member in self.members:
            if member is primary:
                continue
            if not member.exists:
                await asyncio.to_thread(member.follow, primary, self.superuser_password)
            member.start()
        self.redis.start()
        await asyncio.gather(
            self.wait_streaming(primary),
            wait_for(self.redis.ping, timeout=15, what=f"Redis on port {self.redis.port}"),
        )
        await self._migrate(primary)
        for component in self.components:
            component.start()
        await asyncio.gather(*(self._wait_ready(c) for c in self.components))
        return primary

    async def _wait_ready(self, component: Component) -> None:
        async def ready() -> bool:
            if (why := component.exited_early()) is not None:
                raise StackError(why)
            return await component.ready()

        try:
            await wait_for(ready, timeout=60, what=f"the {component.name} to be ready")
        except StackError as exc:
            raise StackError(f"{exc}; see {component.log_path}") from None

    def _initdb(self, member: Member) -> None:
        pwfile = member.base_dir / "initdb-password"
        member.base_dir.mkdir(parents=True, exist_ok=True)
        self.pg_os_user.own(member.base_dir)
        pwfile.write_text(self.superuser_password + "\n")
        pwfile.chmod(0o600)
        self.pg_os_user.own(pwfile)
        try:
            member.initdb(pwfile)
        finally:
            pwfile.unlink()

    async def _wait_accepting(self, member: Member) -> None:
        async def accepting() -> bool:
            if (why := member.exited_early()) is not None:
                raise StackError(why)
            conn = await member.connect(self.superuser_password, timeout=1.0)
            await conn.close()
            return True

        try:
            await wait_for(accepting, timeout=60, what=f"{member.name} to accept connections")
        except StackError as exc:
            raise StackError(f"{exc}; see {member.log_path}") from None

    async def _bootstrap(self, primary: Member) -> None:
        conn = await primary.connect(self.superuser_password)
        try:
            user, db = self.layout.pg_user, self.layout.pg_database
            await conn.execute(
                f"CREATE ROLE {ident(user)} LOGIN PASSWORD {literal(self.app_password)}"
            )
            await conn.execute(f"CREATE DATABASE {ident(db)} OWNER {ident(user)}")
            # Only now, with the roles created, ask every commit to wait for a standby.
            await conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{SYNC_STANDBYS}'")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()

    async def _migrate(self, primary: Member) -> None:
        conn = await asyncpg.connect(self.database_url(primary), timeout=5)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    async def wait_streaming(self, primary: Member) -> None:
        """Wait until every standby streams from the primary as a synchronous candidate."""
        expected = {m.name for m in self.members if m is not primary}
        conn = await primary.connect(self.superuser_password)

        async def all_streaming() -> bool:
            for member in self.members:
                if (why := member.exited_early()) is not None:
                    raise StackError(why)
            return expected <= await sync_standbys(conn)

        try:
            await wait_for(all_streaming, timeout=60, what="standbys to stream synchronously")
        finally:
            await conn.close()

    def stop(self) -> None:
        """Stop everything: services first (they drain), then the primary, so its standbys
        receive its last WAL, then the standbys and Redis."""
        for component in reversed(self.components):
            component.stop()
        members = sorted(self.members, key=lambda m: m.configured_as_standby)
        for member in members:
            member.stop()
        self.redis.stop()

    # -- observation

    async def status(self) -> dict[str, Any]:
        password = self.superuser_password if (self.run_dir / "pg-password").exists() else ""
        roles = await asyncio.gather(*(m.probe_role(password) for m in self.members))
        members = [
            {"name": m.name, "role": role, "port": m.port, "pid": m.pid()}
            for m, role in zip(self.members, roles, strict=True)
        ]
        primary = next(
            (m for m, r in zip(self.members, roles, strict=True) if r == "primary"), None
        )
        state = read_state(self.run_dir)
        return {
            "running": state is not None and state.get("ready", False),
            "supervisor_pid": state.get("supervisor_pid") if state else None,
            "api_url": self.api_url,
            "ws_url": self.ws_url,
            "redis_url": self.redis.url,
            "redis_pid": self.redis.pid(),
            "database_url": self.database_url(primary) if primary else None,
            "primary": primary.name if primary else None,
            "members": members,
            "services": [
                {"name": c.name, "pid": c.pid(), "url": f"http://{c.host}:{c.port}"}
                for c in self.components
            ],
        }

    def update_state(self, **fields: Any) -> None:
        state = read_state(self.run_dir) or {}
        state.pop("layout", None)
        self.write_state(**{**state, **fields})

    def write_state(self, **fields: Any) -> None:
        state = {"layout": asdict(self.layout), **fields}
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_path)
