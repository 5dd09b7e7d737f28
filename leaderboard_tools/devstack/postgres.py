"""One PostgreSQL member of the local cluster: create, clone, start, stop, kill, probe.

Port, socket directory and listen address are passed on the command line rather than written to
``postgresql.conf``: pg_rewind and pg_basebackup copy the configuration files between members,
and a member must never inherit another member's port.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import ssl
import subprocess
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import asyncpg

from leaderboard import connection_urls
from leaderboard.certs import TlsFiles
from leaderboard_tools.devstack.process import (
    OsUser,
    StackError,
    read_pid,
    run,
    signal_tree,
    spawn,
    stop_pid,
)

SUPERUSER = "postgres"
# What a probe of a member that is going, gone or cut off raises. asyncpg's
# InternalClientError ("cannot switch to state 12") shows up mid-failover: a chaos campaign's
# `status` died of it.
PROBE_ERRORS: tuple[type[BaseException], ...] = (
    TimeoutError,
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
# The product's own member script and settings: the local stack runs what the chart runs.
OPERATOR_FILES = Path(str(files("leaderboard.operator")))
MEMBER_SCRIPT = OPERATOR_FILES / "pg-member.sh"

# Settings every member shares, here and in Kubernetes (a standby inherits them through
# pg_basebackup). The synchronous standby list is not there: it is set with ALTER SYSTEM once the
# first standby streams, because a primary that requires a standby before one exists hangs
# every commit.
CLUSTER_CONF = (OPERATOR_FILES / "pg-cluster.conf").read_text()


def find_bin_dir(configured: Path | None) -> Path:
    """The PostgreSQL server binaries: the configured folder, or the newest Debian install."""
    if configured is not None:
        candidates = [configured]
    else:
        found = glob.glob("/usr/lib/postgresql/*/bin")
        candidates = sorted(
            (Path(p) for p in found), key=lambda p: int(p.parent.name), reverse=True
        )
        if (pg_config := shutil.which("pg_config")) is not None:
            with contextlib.suppress(StackError):
                candidates.append(Path(run([pg_config, "--bindir"]).strip()))
    for candidate in candidates:
        if (candidate / "postgres").is_file() and (candidate / "initdb").is_file():
            return candidate
    raise StackError(
        "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin); "
        "install them with: apt-get install -y postgresql, or set LEADERBOARD_PG_BIN_DIR"
    )


@dataclass
class Member:
    name: str
    port: int
    base_dir: Path
    bin_dir: Path
    user: OsUser
    host: str = "127.0.0.1"
    # TLS mode: the member serves this certificate and accepts only TLS connections over TCP
    # (every client verifies it against the CA, hostname included).
    tls: TlsFiles | None = None
    # Chaos drills: the member runs inside this network namespace (its own host, at ``host``),
    # so that faults can cut its paths (leaderboard_tools.chaos.network).
    netns: str | None = None
    # More ``postgres`` options (archiving: leaderboard_tools.devstack.backups).
    extra_options: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _ssl: ssl.SSLContext | None = field(default=None, init=False, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def sock_dir(self) -> Path:
        return self.base_dir / "sock"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def exists(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    @property
    def configured_as_standby(self) -> bool:
        return (self.data_dir / "standby.signal").exists()

    def bin(self, name: str) -> Path:
        return self.bin_dir / name

    def _placed(self, argv: list[str | Path]) -> tuple[list[str | Path], OsUser | None]:
        """``argv`` as it runs on the member's host, and the user to switch to: inside a
        namespace ``ip netns exec`` needs root, so setpriv switches after it (each execs the
        next: the pid is still the program's)."""
        if self.netns is None:
            return argv, self.user
        switch = [f"--reuid={self.user.uid}", f"--regid={self.user.gid}", "--clear-groups", "--"]
        return ["ip", "netns", "exec", self.netns, "setpriv", *switch, *argv], None

    def pid(self) -> int | None:
        """The postmaster's pid, if it is running (whoever started it)."""
        if self.process is not None and self.process.poll() is None:
            return self.process.pid
        return read_pid(self.data_dir / "postmaster.pid")

    def dsn(self, *, user: str, password: str, database: str) -> str:
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{database}{self.ssl_query}"

    @property
    def ssl_query(self) -> str:
        """libpq's TLS parameters for a URI to this member ('' in plaintext mode)."""
        return connection_urls.pg_tls_query(self.tls)

    @property
    def ssl_env(self) -> dict[str, str]:
        """The same for libpq's tools (psql, pg_basebackup, pg_rewind) and pg-member.sh."""
        if self.tls is None:
            return {}
        return {"PGSSLMODE": "verify-full", "PGSSLROOTCERT": str(self.tls.ca_cert)}

    def client_ssl(self) -> ssl.SSLContext | None:
        """What asyncpg connects with: verify the certificate and the host name."""
        if self.tls is None:
            return None
        if self._ssl is None:  # probes run every 0.4 s: load the CA once
            self._ssl = ssl.create_default_context(cafile=self.tls.ca_cert)
        return self._ssl

    def _prepare_dirs(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.sock_dir.mkdir(exist_ok=True)
        self.log_path.touch()
        self.user.own(self.base_dir, self.sock_dir, self.log_path)

    def initdb(self, password_file: Path) -> None:
        """Create a new cluster whose superuser ``postgres`` authenticates with a password."""
        self._prepare_dirs()
        run(
            [
                self.bin("initdb"),
                "-D",
                self.data_dir,
                "-U",
                SUPERUSER,
                f"--pwfile={password_file}",
                "--auth-local=trust",  # the socket directory is private to the member's owner
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--data-checksums",
            ],
            user=self.user,
            what=f"initdb for {self.name}",
        )
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(CLUSTER_CONF)
        if self.netns is not None:  # its peers connect from their own addresses, not loopback
            with open(self.data_dir / "pg_hba.conf", "a") as hba:
                hba.write(
                    "host replication all all scram-sha-256\nhost all all all scram-sha-256\n"
                )

    def follow(self, primary: Member, password: str) -> None:
        """Make this (stopped) member a standby of ``primary``: clone it when it has no data,
        else pg_rewind it onto the primary's history (a former primary comes back as a
        replica), with a fresh clone when rewind fails. The same script starts PostgreSQL pods
        in Kubernetes, so the local drills exercise it.

        The caller runs CHECKPOINT on ``primary`` first, or pg_rewind may see no divergence
        ("no rewind required") and the member later fails to follow the new timeline.
        """
        self._prepare_dirs()
        argv, user = self._placed(["bash", MEMBER_SCRIPT, "prepare"])
        run(
            argv,
            user=user,
            env=self._script_env(
                password,
                PRIMARY_HOST=primary.host,
                PRIMARY_PORT=str(primary.port),
                **self.ssl_env,
            ),
            what=f"{MEMBER_SCRIPT.name} prepare for {self.name} (following {primary.name})",
            timeout=300,
        )

    def _script_env(self, password: str, **extra: str) -> dict[str, str]:
        """pg-member.sh's environment for this member (its pod's, in Kubernetes)."""
        return {
            "PATH": "/usr/bin:/bin", "PGBIN": str(self.bin_dir), "PGDATA": str(self.data_dir),
            "MEMBER_NAME": self.name, "PGPASSWORD": password, **extra,
        }  # fmt: skip

    def pre_stop(self, password: str, wait_s: int) -> None:
        """What a member pod's preStop hook runs (``pg-member.sh stop``): hold the shutdown
        while this member is the primary, up to ``wait_s``, then stop it fast."""
        argv, user = self._placed(["bash", MEMBER_SCRIPT, "stop"])
        run(
            argv,
            user=user,
            env=self._script_env(
                password,
                PRIMARY_HOST=self.host,
                PGSOCKET=str(self.sock_dir),
                PGPORT=str(self.port),
                STOP_WAIT_S=str(wait_s),
            ),
            what=f"{MEMBER_SCRIPT.name} stop for {self.name}",
            timeout=wait_s + 90,
        )
        if self.process is not None:
            self.process.poll()  # reap it if the hook stopped the postmaster we started

    def checkpoint_lsn(self) -> int:
        """The latest checkpoint's LSN of a stopped member (pg_controldata)."""
        out = run([self.bin("pg_controldata"), "-D", self.data_dir], user=self.user)
        for line in out.splitlines():
            if line.startswith("Latest checkpoint location:"):
                high, low = line.split(":", 1)[1].strip().split("/")
                return (int(high, 16) << 32) + int(low, 16)
        raise StackError(f"no checkpoint location in pg_controldata of {self.name}")

    def conninfo(self, password: str) -> str:
        """How another member streams from this one (libpq key=value form)."""
        conninfo = (
            f"host={self.host} port={self.port} user={SUPERUSER} password={password} "
            f"dbname=postgres"
        )
        if self.tls is not None:
            conninfo += f" sslmode=verify-full sslrootcert={self.tls.ca_cert}"
        return conninfo

    def _apply_hba(self) -> None:
        """TLS mode: every TCP rule of pg_hba.conf becomes ``hostssl`` (plaintext connections
        find no rule and are refused); plaintext mode: back to ``host``. Standbys inherit the
        file from pg_basebackup, so each member is set before it starts."""
        hba = self.data_dir / "pg_hba.conf"
        if not hba.exists():
            return
        want, other = ("hostssl", "host") if self.tls is not None else ("host", "hostssl")
        lines = hba.read_text().splitlines(keepends=True)
        changed = [
            want + line[len(other) :] if line.split(maxsplit=1)[:1] == [other] else line
            for line in lines
        ]
        if changed != lines:
            with open(hba, "w") as f:  # in place: keeps the file's owner (postgres)
                f.writelines(changed)

    def _tls_options(self) -> list[str | Path]:
        if self.tls is None:
            return ["-c", "ssl=off"]
        return [
            "-c", "ssl=on",
            "-c", f"ssl_cert_file={self.tls.server_cert}",
            "-c", f"ssl_key_file={self.tls.server_key}",
            "-c", f"ssl_ca_file={self.tls.ca_cert}",
            "-c", "ssl_min_protocol_version=TLSv1.2",
        ]  # fmt: skip

    def start(self) -> None:
        if self.pid() is not None:
            return
        self._prepare_dirs()
        self._apply_hba()
        argv, user = self._placed(
            [
                self.bin("postgres"),
                "-D",
                self.data_dir,
                "-c",
                f"port={self.port}",
                "-c",
                f"listen_addresses={self.host}",
                "-c",
                f"unix_socket_directories={self.sock_dir}",
                "-c",
                f"cluster_name={self.name}",
                *self._tls_options(),
                *self.extra_options,
            ]
        )
        self.process = spawn(
            argv,
            log=self.log_path,
            user=user,
            # Its own HOME: libpq in the walreceiver looks for ~/.postgresql/postgresql.crt,
            # and an inherited HOME it may not enter (root's) fails every TLS connection.
            env={**os.environ, "HOME": str(self.base_dir)},
        )

    def stop(self, *, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: abort transactions, checkpoint, exit)."""
        pid = self.pid()
        if pid is not None:
            stop_pid(pid, sig=signal.SIGINT, timeout=timeout, child=self._child(pid))
        if self.process is not None:
            self.process.poll()  # reap ours if someone else killed it (the operator's fence)
        self.process = None

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend, so not even a hung backend can answer
        again: this is the fence."""
        pid = self.pid()
        if pid is not None:
            signal_tree(pid, signal.SIGKILL)
            if (child := self._child(pid)) is not None:
                child.wait()

    def _child(self, pid: int) -> subprocess.Popen[bytes] | None:
        return self.process if self.process is not None and self.process.pid == pid else None

    def exited_early(self) -> str | None:
        """If our postmaster child died, the tail of its log (to explain why)."""
        if self.process is None or self.process.poll() is None:
            return None
        tail = self.log_path.read_text(errors="replace").splitlines()[-5:]
        return f"{self.name} exited with {self.process.returncode}: " + " | ".join(tail)

    async def connect(self, password: str, *, timeout: float = 2.0) -> asyncpg.Connection:
        return await asyncpg.connect(
            host=self.host,
            port=self.port,
            user=SUPERUSER,
            password=password,
            database="postgres",
            timeout=timeout,
            command_timeout=timeout,
            ssl=self.client_ssl(),
        )

    async def probe_role(self, password: str, *, timeout: float = 1.0) -> str:
        """``primary``, ``replica`` or ``down``, asked of the server itself."""
        if self.pid() is None:
            return "down"
        try:
            conn = await self.connect(password, timeout=timeout)
        except PROBE_ERRORS:
            return "down"
        try:
            in_recovery = await conn.fetchval("SELECT pg_is_in_recovery()")
        except PROBE_ERRORS:
            conn.terminate()
            return "down"
        try:
            await conn.close(timeout=timeout)
        except PROBE_ERRORS:  # it answered: the role stands
            conn.terminate()
        return "replica" if in_recovery else "primary"
