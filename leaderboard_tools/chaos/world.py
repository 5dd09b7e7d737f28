"""The stack the partition drill and the chaos campaign break: the local stack with every
PostgreSQL member and the failover operator on a host of its own.

Hosts are network namespaces on one bridge (:mod:`leaderboard_tools.chaos.network`): ``member0``,
``member1``... and ``operator``. Redis, the API and the broadcaster stay on the machine
(where the drill's writers and viewers run too), so "the machine" is the clients' side of
every path: cutting a member from ``machine`` cuts it from the API. The operator is its own
process (:mod:`leaderboard_tools.operator.localmain`), so a partition can cut it from the primary
while the API still reaches it. What a partition cannot stop in this shell is a kill: the
operator fences with SIGKILL through the shared kernel (the Kubernetes shell, where a
deleted pod keeps running, is tested on kmock).

Everything lives in ``RUN_DIR/chaos`` (deleted and rebuilt each run) on free ports, so it
runs beside a developer's own stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from leaderboard.config import Settings
from leaderboard.operator.probe import sync_standbys
from leaderboard_tools.chaos.network import Host, Network
from leaderboard_tools.devstack.components import Component
from leaderboard_tools.devstack.ports import free_ports
from leaderboard_tools.devstack.postgres import Member
from leaderboard_tools.devstack.process import StackError, signal_tree, spawn, stop_pid, wait_for
from leaderboard_tools.devstack.rundir import MARKER, read_state
from leaderboard_tools.devstack.stack import Layout, Stack

OPERATOR = "operator"


def world_settings(base: Settings, members: int) -> Settings:
    """The world's settings: the base ones, in ``RUN_DIR/chaos`` on free ports."""
    redis, api, ws, metrics = free_ports(4)
    fields: dict[str, Any] = {
        **base.model_dump(),
        "run_dir": base.run_path / "chaos",
        "pg_members": members,
        "redis_port": redis,
        "api_port": api,
        "ws_port": ws,
        "operator_metrics_port": metrics,
        "host": "127.0.0.1",
    }
    return Settings(**fields)


@dataclass
class World:
    settings: Settings
    network: Network = field(default_factory=lambda: Network("ch"))
    stack: Stack | None = None
    operator: subprocess.Popen[bytes] | None = None
    hosts: dict[str, Host] = field(default_factory=dict)

    @classmethod
    def plan(cls, base: Settings, members: int = 3) -> World:
        return cls(world_settings(base, members))

    @property
    def root(self) -> Path:
        return self.settings.run_path

    @property
    def cluster(self) -> Stack:
        assert self.stack is not None, "start() first"
        return self.stack

    # -- lifecycle

    async def start(self) -> World:
        if os.geteuid() != 0:
            raise StackError("the chaos drills build network namespaces: run them as root")
        self._purge()
        self.network.create()
        for i in range(self.settings.pg_members):
            self.hosts[f"member{i}"] = self.network.add_host(f"member{i}")
        self.hosts[OPERATOR] = self.network.add_host(OPERATOR)
        layout = replace(
            Layout.from_settings(self.settings),
            member_hosts=tuple(
                (self.hosts[f"member{i}"].netns, self.hosts[f"member{i}"].address)
                for i in range(self.settings.pg_members)
            ),
        )
        self.stack = Stack(self.root, layout, self.settings.pg_bin_dir, services=True)
        primary = await self.stack.start()
        self.stack.write_state(supervisor_pid=os.getpid(), ready=True, primary=primary.name)
        self.start_operator()
        await wait_for(self._operator_started, timeout=30, what="the operator to start")
        return self

    def start_operator(self) -> None:
        env = {
            **os.environ,
            "LEADERBOARD_RUN_DIR": str(self.root),
            "LEADERBOARD_OPERATOR_METRICS_PORT": str(self.settings.operator_metrics_port),
        }
        argv = [sys.executable, "-m", "leaderboard_tools.operator.localmain"]
        self.operator = spawn(
            self.hosts[OPERATOR].argv(argv), log=self.root / "operator.log", env=env
        )

    async def _operator_started(self) -> bool:
        if self.operator is not None and self.operator.poll() is not None:
            tail = (self.root / "operator.log").read_text(errors="replace").splitlines()[-5:]
            raise StackError("the operator exited: " + " | ".join(tail))
        return any(e["action"] == "start" for e in self.events())

    def stop(self) -> None:
        """Stop everything and remove the hosts; never raises (teardown)."""
        if self.stack is not None:
            for member in self.stack.members:
                if (pid := member.pid()) is not None:
                    signal_tree(pid, signal.SIGCONT)  # a hung member would never stop
        if self.operator is not None:
            stop_pid(self.operator.pid, timeout=10, child=self.operator)
        if self.stack is not None:
            with contextlib.suppress(StackError, OSError):
                self.stack.stop()
        self.network.destroy()

    def _purge(self) -> None:
        if self.root.exists():
            if not (self.root / MARKER).exists():
                raise StackError(f"refusing to delete {self.root}: not a leaderboard run folder")
            shutil.rmtree(self.root)

    # -- what the drills read

    def events(self, since: float = 0.0) -> list[dict[str, Any]]:
        """The operator's decisions (operator.jsonl), from ``since`` on."""
        try:
            lines = (self.root / "operator.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        events = []
        for line in lines:
            with contextlib.suppress(json.JSONDecodeError):  # a line being written
                event = json.loads(line)
                if event["ts"] >= since:
                    events.append(event)
        return events

    def member(self, name: str) -> Member:
        return next(m for m in self.cluster.members if m.name == name)

    def component(self, name: str) -> Component:
        return next(c for c in self.cluster.components if c.name == name)

    def recorded_primary(self) -> str:
        """The primary the operator made (stack.json): who routing should find."""
        state = read_state(self.root) or {}
        return str(state.get("primary", ""))

    async def roles(self) -> dict[str, str]:
        """Each member's role as the machine sees it (``down``: does not answer)."""
        status = await self.cluster.status()
        return {m["name"]: m["role"] for m in status["members"]}

    async def healthy(self) -> bool:
        """One primary, every other member streaming from it as a synchronous candidate,
        the API and the broadcaster ready: the state every fault must end in."""
        stack = self.cluster
        roles = await self.roles()
        primaries = [n for n, r in roles.items() if r == "primary"]
        if len(primaries) != 1:
            return False
        primary = self.member(primaries[0])
        try:
            conn = await primary.connect(stack.superuser_password, timeout=2)
        except Exception:  # refused, timed out, starting: not healthy yet
            return False
        try:
            streaming = await sync_standbys(conn, timeout=2)
        except Exception:
            return False
        finally:
            conn.terminate()
        others = {m.name for m in stack.members} - {primary.name}
        if not others <= streaming:
            return False
        # ... and the operator knows it: until its probes have seen them synchronous since the
        # last promotion, it would wait for a hung primary rather than promote.
        events = self.events()
        promoted = max((e["ts"] for e in events if e["action"] == "promoted"), default=0.0)
        known = [e for e in events if e["action"] == "candidates" and e["ts"] >= promoted]
        if not known or not others <= set(known[-1].get("candidates", [])):
            return False
        for component in stack.components:
            try:
                if not await component.ready():
                    return False
            except (OSError, TimeoutError, IndexError):
                return False
        return True

    async def wait_healthy(self, timeout: float) -> float | None:
        """Seconds until :meth:`healthy`, or None past ``timeout``."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if await self.healthy():
                return time.monotonic() - started
            await asyncio.sleep(0.25)
        return None
