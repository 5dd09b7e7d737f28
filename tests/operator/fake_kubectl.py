"""A stand-in for ``kubectl`` that answers the few commands ``drill failover --kube`` sends,
from the local stack (its settings come from the LEADERBOARD_* environment): the PostgresCluster
is the stack's status, a pod is a member, ``delete pod`` kills its postmaster, the Events are
the operator's log, ``exec ... psql`` runs the query on the member.

It checks the commands the Kubernetes drill builds and parses what it reads; the failover
itself is the local operator's.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import asyncpg

from leaderboard.config import load_settings
from leaderboard_tools.devstack.process import signal_tree
from leaderboard_tools.devstack.stack import Stack


async def main(argv: list[str]) -> int:
    assert argv[0] == "-n", argv
    args = argv[2:]
    stack = Stack.from_settings(load_settings(), services=True)
    status = await stack.status()
    pids = {m["name"]: m["pid"] for m in status["members"]}
    match args:
        case ["get", "postgrescluster", _, "-o", "json"]:
            members = [{"name": m["name"], "role": m["role"]} for m in status["members"]]
            print(json.dumps({"status": {"currentPrimary": status["primary"], "members": members}}))
        case ["delete", "pod", name, "--grace-period=0", "--force", "--wait=false"]:
            os.kill(pids[name], signal.SIGKILL)
        case ["exec", name, "-c", "postgres", "--", "kill", sig, "1"]:
            if pids.get(name) is None:
                print(f"pod {name} is not running", file=sys.stderr)
                return 1
            signal_tree(pids[name], signal.SIGSTOP if sig == "-STOP" else signal.SIGCONT)
        case ["get", "events", "-o", "json", "--field-selector", selector]:
            cluster = selector.split("=", 1)[1]
            items = []
            for line in (stack.run_dir / "operator.jsonl").read_text().splitlines():
                event = json.loads(line)
                reason = {"promote": "Promote", "promoted": "Promoted"}.get(event["action"])
                if reason:
                    name = f"{cluster}.{int(event['ts'] * 1e9):x}"
                    items.append({"metadata": {"name": name}, "reason": reason})
            print(json.dumps({"items": items}))
        case ["exec", "-i", name, "-c", "postgres", "--", "psql", "-U", "postgres", "-d", db,
              "-Atq", "-f", "-"]:  # fmt: skip
            member = next(m for m in stack.members if m.name == name)
            conn = await asyncpg.connect(
                host=member.host, port=member.port, user="postgres",
                password=stack.superuser_password, database=db,
            )  # fmt: skip
            try:
                rows = await conn.fetch(sys.stdin.read())
            finally:
                await conn.close()
            print("\n".join(str(r[0]) for r in rows))
        case _:
            print(f"fake kubectl: unexpected {args}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
