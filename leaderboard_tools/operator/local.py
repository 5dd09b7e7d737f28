"""The local shell of the failover operator: probes the local members, asks :func:`decide`,
and carries the decision out with processes (kill, pg_promote, pg_rewind, start).

Fencing is the first step of a failover, before the promotion: the old primary's postmaster
gets SIGKILL (a hung process is killed too), so it can never acknowledge a write again. It
could not anyway without a synchronous standby, and its only standby is the one being
promoted; the kill makes it certain and frees it to rejoin. Routing needs no step here: the
services connect through a multi-host DSN with ``target_session_attrs=read-write``, so they
find whichever member accepts writes.

Every decision is logged once (when it changes) and appended to ``RUN_DIR/operator.jsonl``
(what the drill reads to time detection and promotion).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import asyncpg

from leaderboard import supervise
from leaderboard.config import Settings
from leaderboard.db.sql import literal
from leaderboard.operator import metrics
from leaderboard.operator.decide import (
    Action,
    Cluster,
    Decision,
    Durability,
    Member,
    decide,
)
from leaderboard.operator.members import Observations
from leaderboard.operator.probe import leaked_cancellation, probe
from leaderboard_tools.devstack.postgres import Member as PgMember
from leaderboard_tools.devstack.process import StackError
from leaderboard_tools.devstack.stack import SYNC_STANDBYS, Stack
from leaderboard_tools.operator.control import read_control, write_control
from leaderboard_tools.operator.rollout import Rolling

log = logging.getLogger("leaderboard.operator")
# The `cluster` label of the local stack's operator metrics (in Kubernetes: namespace/name).
METRICS_CLUSTER = "local"
BACKUP_CHECK_S = 30.0  # how often the repository is asked what it holds (for the metrics)


class LocalOperator:
    def __init__(
        self,
        stack: Stack,
        primary: str,
        *,
        durability: Durability = "required",
        interval_s: float = 0.5,
        timeout_s: float = 1.0,
        failure_threshold: int = 3,
    ) -> None:
        self.stack = stack
        self.primary = primary
        self.durability: Durability = durability
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.failure_threshold = failure_threshold
        self.observed = Observations()  # probes missed, stalls, synchronous candidates
        self.failovers = 0
        self.paused = False
        self.switchover_to: str | None = None
        self.rolling: Rolling | None = None  # a rollout under way (leaderboard rollout)
        self._candidates: frozenset[str] | None = None  # as last recorded
        self._last_reason: str | None = None
        self._pushing: asyncio.Task[None] | None = None  # the received WAL, after a promotion

    async def __aenter__(self) -> LocalOperator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.settle()

    async def settle(self) -> None:
        """Waits for the hand-over of received WAL a promotion started. Left behind, it
        outlived the run directory, and the error it then kept was logged from wherever the
        garbage collector ran: inside a compile(), Python 3.11 fails that with SystemError."""
        if self._pushing is not None:
            await asyncio.shield(self._pushing)

    @property
    def events_path(self) -> Path:
        return self.stack.run_dir / "operator.jsonl"

    def _member(self, name: str) -> PgMember:
        return next(m for m in self.stack.members if m.name == name)

    # -- observe

    async def observe(self) -> Cluster:
        password = self.stack.superuser_password
        by_port = {m.port: m.name for m in self.stack.members}
        names = frozenset(by_port.values())

        async def one(member: PgMember) -> Member:
            running = member.pid() is not None
            try:
                seen = await probe(
                    member.host, member.port, password, self.timeout_s, tls=member.client_ssl()
                )
            except Exception:  # refused, timed out, starting up: a missed probe
                return self.observed.missed(member.name, running=running)
            upstream = by_port.get(seen.upstream_port) if seen.upstream_port else None
            return self.observed.answered(
                member.name, seen, primary=self.primary, members=names, upstream=upstream,
                running=running,
            )  # fmt: skip

        members = await asyncio.gather(*(one(m) for m in self.stack.members))
        return Cluster(
            members=tuple(members),
            primary=self.primary,
            sync_candidates=self.observed.sync_candidates,
            sync_streaming=self.observed.sync_streaming,
            durability=self.durability,
            failure_threshold=self.failure_threshold,
            paused=self.paused,
            switchover_to=self.switchover_to,
            outdated=frozenset(self.rolling.outdated if self.rolling else ()),
            expected_members=len(self.stack.members),
        )

    # -- the loop

    async def watch_backups(self, every_s: float = BACKUP_CHECK_S) -> None:
        """What the repository holds, for the metrics and alerts: the newest backup, and
        whether the repository answers at all (``pgbackrest info``, in a thread)."""
        while True:
            if self.stack.archiving and self.stack.backups.configured:
                try:
                    info = await asyncio.to_thread(self.stack.backups.info)
                except (StackError, OSError, ValueError) as exc:
                    log.warning("backup repository: %s", exc)
                    metrics.backups(METRICS_CLUSTER, reachable=False, last_finished=None)
                else:
                    last = max((b.finished_at for b in info.backups), default=None)
                    metrics.backups(
                        METRICS_CLUSTER,
                        reachable=info.usable,
                        last_finished=None if last is None else last.timestamp(),
                    )
            await asyncio.sleep(every_s)

    async def run(self) -> None:
        metrics.start(METRICS_CLUSTER)
        metrics.LEADER.labels(METRICS_CLUSTER).set(1)  # the local stack has one operator
        watching = supervise.start("backup-info", self.watch_backups)
        try:
            await self._rounds()
        finally:
            watching.cancel()
            await self.settle()

    async def _rounds(self) -> None:
        self.record(
            "start", None, f"watching {len(self.stack.members)} members; primary {self.primary}"
        )
        while True:
            started = time.monotonic()
            try:
                await self.round()
            except Exception as exc:  # one bad round must not end failover for good
                log.exception("operator round failed")
                self.record("error", None, f"round failed: {exc!r}")
            except asyncio.CancelledError:
                if not leaked_cancellation():  # only a cancellation of this task ends it
                    raise
                log.exception("operator round failed")
                self.record("error", None, "round failed: a stray CancelledError")
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    async def round(self) -> None:
        self.read_control()
        cluster = await self.observe()
        if self.observed.sync_candidates != self._candidates:
            # Who may take over if the primary fails now (none: it would be waited for).
            self._candidates = self.observed.sync_candidates
            names = sorted(self._candidates)
            self.record(
                "candidates", None, f"may take over: {', '.join(names) or 'none'}",
                candidates=names,
            )  # fmt: skip
        metrics.observe(METRICS_CLUSTER, cluster)
        metrics.archiving(METRICS_CLUSTER, self.observed.archiver)
        decision = decide(cluster)
        if decision.reason != self._last_reason or decision.action is not Action.NONE:
            log.info("%s", decision)
            self.record(decision.action.value, decision.target, decision.reason)
            if decision.reason != self._last_reason:
                metrics.decided(METRICS_CLUSTER, decision)
            self._last_reason = decision.reason
        if decision.action is not Action.NONE:
            try:
                await self.act(decision)
            except (StackError, OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("%s failed: %s", decision.action.value, exc)
                self.record("error", decision.target, f"{decision.action.value} failed: {exc}")
        if self.rolling is not None:  # done, once every member streams again; or stalled
            seen = await self.observe() if decision.action is not Action.NONE else cluster
            if (ended := self.rolling.outcome(seen, decision.reason)) is not None:
                action, reason, extra = ended
                self.record(action, None, reason, rollout=self.rolling.id, **extra)
                write_control(self.stack.run_dir, rollout=None)
                self.rolling = None

    def read_control(self) -> None:
        """What a person asked for (``leaderboard pause|resume|switchover``)."""
        control = read_control(self.stack.run_dir)
        self.paused = bool(control.get("paused", False))
        adopt = control.get("adopt_primary")
        if isinstance(adopt, str):  # `leaderboard restore` rebuilt the cluster around it
            if adopt != self.primary:
                self.primary = adopt
                self.observed.promoted()
                self.record("adopted", adopt, f"{adopt} is the primary (restored)")
            write_control(self.stack.run_dir, adopt_primary=None)
        wanted = control.get("switchover_to")
        self.switchover_to = wanted if isinstance(wanted, str) and wanted != self.primary else None
        rollout = control.get("rollout")
        if isinstance(rollout, str) and (self.rolling is None or self.rolling.id != rollout):
            self.rolling = Rolling(rollout, [m.name for m in self.stack.members])
            reason = "rollout: replicas first, the primary last"
            self.record("rollout", None, reason, rollout=rollout)

    def record(self, action: str, target: str | None, reason: str, **extra: Any) -> None:
        event = {"ts": time.time(), "action": action, "target": target, "reason": reason, **extra}
        with open(self.events_path, "a") as f:
            f.write(json.dumps(event) + "\n")

    # -- act

    async def act(self, decision: Decision) -> None:
        assert decision.target is not None
        if decision.action is Action.PROMOTE:
            await self.promote(decision.target, decision.old_primary)
        elif decision.action is Action.FENCE:
            await asyncio.to_thread(self._member(decision.target).kill)
            self.record("fenced", decision.target, "SIGKILL sent")
        elif decision.action is Action.REJOIN:
            await self.rejoin(decision.target)
        elif decision.action is Action.REPOINT:
            await self.repoint(decision.target)
        elif decision.action is Action.SWITCHOVER:
            assert decision.old_primary is not None
            await self.switchover(decision.target, decision.old_primary)
            if self.rolling is not None:  # the old primary restarted, as a replica
                self.rolling.restarted_one(decision.old_primary)
        elif decision.action is Action.ROLL_REPLICA:
            member = self._member(decision.target)
            await asyncio.to_thread(member.stop)
            member.start()
            self.observed.rejoined(member.name)
            if self.rolling is not None:
                self.rolling.restarted_one(member.name)
            self.record("restarted", member.name, "rollout: restarted on its own data")
        elif decision.action is Action.ENABLE_SYNC:
            await self._set_sync(self._member(decision.target), SYNC_STANDBYS)
        elif decision.action is Action.RESTART:
            await self.restart_in_place(decision.target)

    async def promote(self, name: str, old: str | None, kind: str = "failover") -> None:
        if old is not None and self._member(old).pid() is not None:
            await asyncio.to_thread(self._member(old).kill)  # fence first
            self.record("fenced", old, "SIGKILL sent to the old primary before promoting")
        target = self._member(name)
        conn = await target.connect(self.stack.superuser_password, timeout=5)
        try:
            promoted = await conn.fetchval("SELECT pg_promote(true, 30)")
            if not promoted:
                raise StackError(f"pg_promote on {name} did not finish")
        finally:
            await conn.close()
        # It is the primary from here on, whatever fails next: were a later step to fail
        # before this is recorded, the next rounds would wait for the dead primary for good
        # (its only synchronous candidate no longer answers as a replica).
        self.primary = name
        self.failovers += 1
        metrics.promoted(METRICS_CLUSTER, kind, time.time())
        if self.stack.archiving and self.stack.backups.configured:  # in the background
            self._pushing = asyncio.create_task(self._push_received(name))
        self.observed.promoted()
        self.stack.update_state(primary=name)
        self.record("promoted", name, f"{name} is the primary (failover {self.failovers})")
        # A promoted node inherits the old list; say explicitly what it must wait for.
        await self._set_sync(target, SYNC_STANDBYS if self.durability == "required" else "")
        for other in self.stack.members:  # the other standbys follow the new primary
            if other.name not in (name, old) and other.pid() is not None:
                try:
                    await self.repoint(other.name)
                    self.record("repointed", other.name, f"{other.name} now follows {name}")
                except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                    self.record("error", other.name, f"could not re-point it: {exc}")
        if old is not None and self._member(old).pid() is None:
            # Fenced and stopped: rejoin it now rather than one probe round later. With two
            # members and durability "required", writes resume only once it streams again.
            self.record(
                "rejoin", old, f"{old} was the primary; rejoining it as a replica of {name}"
            )
            await self.rejoin(old)

    async def _push_received(self, name: str) -> None:
        try:
            pushed = await asyncio.to_thread(self.stack.backups.push_received, self._member(name))
        except StackError as exc:
            self.record("error", name, f"pushing the WAL it received failed: {exc}")
        else:
            self.record("archived", name, f"{len(pushed)} received WAL segments handed over")

    async def switchover(self, name: str, old: str) -> None:
        """Planned, without loss: a clean shutdown of the primary sends its last WAL (down to
        the shutdown checkpoint) to the synchronous standby before it exits; then that
        standby is promoted and the old primary follows it."""
        old_member, target = self._member(old), self._member(name)
        await asyncio.to_thread(old_member.stop)
        last = await asyncio.to_thread(old_member.checkpoint_lsn)
        password = self.stack.superuser_password

        async def caught_up() -> bool:
            seen = await probe(
                target.host, target.port, password, self.timeout_s, tls=target.client_ssl()
            )
            return seen.lsn >= last

        deadline = time.monotonic() + 30
        while not await caught_up():
            if time.monotonic() > deadline:
                old_member.start()  # give the primary back rather than lose anything
                raise StackError(f"{name} did not receive {old}'s last WAL; switchover aborted")
            await asyncio.sleep(0.05)
        await self.promote(name, old, kind="switchover")
        write_control(self.stack.run_dir, switchover_to=None)
        self.record("switched-over", name, f"planned switchover from {old} to {name} done")

    async def rejoin(self, name: str) -> None:
        member, primary = self._member(name), self._member(self.primary)
        password = self.stack.superuser_password
        started = time.monotonic()
        if member.pid() is not None:  # a replica that answers but does not stream
            await asyncio.to_thread(member.stop)
        conn = await primary.connect(password, timeout=5)
        try:
            await conn.execute("CHECKPOINT")  # else pg_rewind may see no fork and skip it
        finally:
            await conn.close()
        checkpointed = time.monotonic()
        await asyncio.to_thread(member.follow, primary, password)
        how = f"{time.monotonic() - checkpointed:.2f} s after a "
        how += f"{checkpointed - started:.2f} s checkpoint"
        member.start()
        self.observed.rejoined(name)
        self.record("rejoined", name, f"{name} restarted as a replica of {primary.name} ({how})")

    async def restart_in_place(self, name: str) -> None:
        """Start a member whose process is gone on its own data, as a standby: what the
        kubelet and ``pg-member.sh`` do to a pod's container. Nobody else answers as primary,
        so the script starts it in recovery; the next rounds promote it back."""
        member = self._member(name)
        await asyncio.to_thread(member.follow, member, self.stack.superuser_password)
        member.start()
        self.observed.rejoined(name)
        self.record("restarted", name, f"{name} started again in place, as a standby")

    async def repoint(self, name: str) -> None:
        member, primary = self._member(name), self._member(self.primary)
        conninfo = f"{primary.conninfo(self.stack.superuser_password)} application_name={name}"
        await self._alter_system(member, "primary_conninfo", conninfo)

    async def _set_sync(self, member: PgMember, value: str) -> None:
        await self._alter_system(member, "synchronous_standby_names", value)

    async def _alter_system(self, member: PgMember, setting: str, value: str) -> None:
        """ALTER SYSTEM and reload: both settings take effect without a restart."""
        conn = await member.connect(self.stack.superuser_password, timeout=5)
        try:
            await conn.execute(f"ALTER SYSTEM SET {setting} = {literal(value)}")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()


async def run_local(stack: Stack, primary: str, settings: Settings) -> None:
    """The local operator with the configured thresholds, serving its metrics as its pod
    does in Kubernetes (dashboards, alerts); runs until cancelled."""
    from prometheus_client import start_http_server

    start_http_server(settings.operator_metrics_port, addr=settings.host)
    await LocalOperator(
        stack,
        primary,
        durability=settings.durability,
        interval_s=settings.probe_interval_s,
        timeout_s=settings.probe_timeout_s,
        failure_threshold=settings.failure_threshold,
    ).run()
