"""The development tools' ``leaderboard`` commands: the local stack (``up``, ``down``,
``status``), dev tokens, the local operator's controls (``pause``, ``resume``,
``switchover``), the drills and the chaos campaign. The product's command
(:mod:`leaderboard.cli`) finds them through the ``leaderboard.commands`` entry point; the
image installs the product alone, so none of them exists there."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
import time
from typing import Any

from leaderboard import auth
from leaderboard.cli import Handler
from leaderboard.config import Settings
from leaderboard_tools.devstack import backup_commands
from leaderboard_tools.devstack.postgres import Member
from leaderboard_tools.devstack.process import StackError
from leaderboard_tools.devstack.stack import Stack
from leaderboard_tools.devstack.supervisor import detach, down, serve


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> dict[str, Handler]:
    """The ``leaderboard.commands`` entry point: add the tools' subcommands to ``sub``."""

    up = sub.add_parser("up", help="start the local stack (foreground; Ctrl-C stops it)")
    up.add_argument(
        "--detach", action="store_true", help="run in the background, return when ready"
    )

    dn = sub.add_parser("down", help="stop the local stack")
    dn.add_argument("--purge", action="store_true", help="also delete its data (next up is empty)")

    st = sub.add_parser("status", help="show the local stack's members and URLs")
    st.add_argument("--json", action="store_true", help="print one JSON object")

    tok = sub.add_parser("token", help="print a JWT per user, signed with the dev key")
    tok.add_argument("user_ids", nargs="+", metavar="USER_ID")
    tok.add_argument(
        "--ttl", type=float, default=3600.0, help="lifetime in seconds (negative: already expired)"
    )
    tok.add_argument(
        "--scope",
        default="",
        help='space-separated scopes, e.g. "admin" or "server" (local development key only)',
    )

    roll = sub.add_parser(
        "rollout", help="restart every member, replicas first, the primary last (switchover)"
    )
    roll.add_argument("--json", action="store_true", help="print one JSON object")

    sub.add_parser("pause", help="the operator observes but takes no action")
    sub.add_parser("resume", help="the operator acts again")
    switch = sub.add_parser("switchover", help="planned switchover to a synchronous replica")
    switch.add_argument("member", help="the replica to promote, e.g. member1")

    drill = sub.add_parser("drill", help="break things on purpose and measure the recovery")
    drill_sub = drill.add_subparsers(dest="drill", required=True, metavar="DRILL")
    failover = drill_sub.add_parser("failover", help="kill the primary under write load")
    failover.add_argument("--count", type=int, default=1, help="drills in a row (A->B->A...)")
    failover.add_argument("--fault", choices=["kill", "hang", "standby"], default="kill")
    failover.add_argument("--json", action="store_true", help="print one JSON object")
    failover.add_argument(
        "--kube", action="store_true", help="drill a cluster through kubectl (docs/runbook)"
    )
    failover.add_argument("--namespace", default="default", help="--kube: the namespace")
    failover.add_argument("--cluster", default="leaderboard-pg", help="--kube: PostgresCluster")
    failover.add_argument(
        "--api-url", default="http://127.0.0.1:8000", help="--kube: the API (a port-forward)"
    )
    restore = drill_sub.add_parser(
        "restore", help="backup, writes, a switchover, then restore to the latest and to a time"
    )
    restore.add_argument("--json", action="store_true", help="print one JSON object")
    partition = drill_sub.add_parser(
        "partition", help="cut the primary off the network under load (needs root)"
    )
    partition.add_argument(
        "--shape",
        choices=["primary", "operator-primary", "primary-standbys"],
        default="primary",
        help="primary: cut from everyone; operator-primary: only from the operator; "
        "primary-standbys: only from its standbys",
    )
    partition.add_argument("--hold", type=float, default=15.0, help="seconds the cut lasts")
    _chaos_options(partition)

    chaos = sub.add_parser(
        "chaos", help="a randomised campaign of faults under load, then a history check"
    )
    chaos.add_argument("--duration", type=float, required=True, metavar="S")
    chaos.add_argument("--seed", type=int, default=1, help="the schedule (same seed: same run)")
    chaos.add_argument(
        "--faults",
        default="all",
        help="comma-separated fault names or kinds (process, network, redis, api, "
        "broadcaster); default all",
    )
    _chaos_options(chaos)
    backup_commands.add_parsers(sub)
    return {name: _reporting_stack_errors(handler) for name, handler in _COMMANDS.items()}


def _chaos_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--members", type=int, default=3, help="PostgreSQL members (default 3)")
    parser.add_argument("--reports", default="reports", help="where the JSON and PNG go")
    parser.add_argument("--json", action="store_true", help="print the JSON report")


def _up(settings: Settings, args: argparse.Namespace) -> int:
    stack = Stack.from_settings(settings, services=True)
    if args.detach:
        pid = detach(stack)
        print(f"leaderboard stack ready (supervisor pid {pid}); `leaderboard down` stops it")
        _print_status(asyncio.run(stack.status()))
        return 0

    async def ready() -> None:
        _print_status(await stack.status())
        print("Ctrl-C stops everything.", flush=True)

    async def supervise(primary: Member) -> None:
        from leaderboard_tools.operator.local import run_local

        await run_local(stack, primary.name, settings)

    asyncio.run(serve(stack, ready, supervise if settings.operator_enabled else None))
    return 0


def _down(settings: Settings, args: argparse.Namespace) -> int:
    down(Stack.from_settings(settings, services=True), purge=args.purge)
    print("leaderboard stack stopped" + (" and its data deleted" if args.purge else ""))
    return 0


def _status(settings: Settings, args: argparse.Namespace) -> int:
    from leaderboard_tools.operator.control import read_control

    status = asyncio.run(Stack.from_settings(settings, services=True).status())
    status["operator"] = {"paused": False, "switchover_to": None, **read_control(settings.run_path)}
    if args.json:
        print(json.dumps(status))
    else:
        _print_status(status)
    return 0


def _print_status(status: dict[str, Any]) -> None:
    state = "running" if status["running"] else "not running"
    print(f"stack     {state}")
    print(f"api       {status['api_url']}")
    print(f"websocket {status['ws_url']}")
    print(f"redis     {status['redis_url']}  (pid {status['redis_pid'] or '-'})")
    print(f"database  {status['database_url'] or '-'}")
    print(f"\n{'MEMBER':<10}{'ROLE':<9}{'PORT':<7}PID")
    for m in status["members"]:
        marker = "  <- primary" if m["name"] == status["primary"] else ""
        print(f"{m['name']:<10}{m['role']:<9}{m['port']:<7}{m['pid'] or '-'}{marker}")
    sys.stdout.flush()


def _token(settings: Settings, args: argparse.Namespace) -> int:
    if args.scope.split() and (settings.env != "dev" or settings.jwt_secrets):
        # A scoped token opens the admin API: minted only from the local stack's own key.
        print(
            "leaderboard: --scope mints only with the local stack's development key "
            "(LEADERBOARD_ENV=dev and no LEADERBOARD_JWT_SECRET)",
            file=sys.stderr,
        )
        return 2
    if args.ttl > settings.jwt_max_lifetime_s:
        print(
            f"leaderboard: --ttl {args.ttl:.0f} is longer than the API accepts "
            f"(LEADERBOARD_JWT_MAX_LIFETIME_S={settings.jwt_max_lifetime_s:.0f})",
            file=sys.stderr,
        )
        return 2
    for user_id in args.user_ids:
        print(auth.mint(settings, user_id, ttl=args.ttl, scope=args.scope))
    return 0


def _rollout(settings: Settings, args: argparse.Namespace) -> int:
    from leaderboard_tools.operator.rollout import report, run_rollout

    stack = Stack.from_settings(settings, services=True)
    result = asyncio.run(run_rollout(stack, settings))
    print(report(result, args.json))
    return 0 if result.passed else 1


def _pause(settings: Settings, args: argparse.Namespace) -> int:
    from leaderboard_tools.operator.control import write_control

    write_control(settings.run_path, paused=args.command == "pause")
    print(f"operator {'paused: observing only' if args.command == 'pause' else 'resumed'}")
    return 0


def _switchover(settings: Settings, args: argparse.Namespace) -> int:
    from leaderboard_tools.operator.control import write_control

    stack = Stack.from_settings(settings, services=True)
    if args.member not in {m.name for m in stack.members}:
        print(f"leaderboard: no member {args.member!r}", file=sys.stderr)
        return 2
    write_control(settings.run_path, switchover_to=args.member)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = asyncio.run(stack.status())
        if status["primary"] == args.member:
            print(f"{args.member} is the primary")
            return 0
        time.sleep(0.2)
    print(f"leaderboard: {args.member} is not the primary after 60 s", file=sys.stderr)
    return 1


def _drill(settings: Settings, args: argparse.Namespace) -> int:
    if args.drill == "restore":
        from leaderboard_tools.devstack import restore_drill

        stack = Stack.from_settings(settings, services=True)
        if not stack.archiving:
            raise StackError("WAL archiving is off (LEADERBOARD_BACKUP_ARCHIVING=false)")
        result = asyncio.run(restore_drill.run_drill(stack, settings))
        print(restore_drill.report(result, args.json))
        return 0 if result.passed else 1
    if args.drill == "partition":
        from leaderboard_tools.chaos.faults import partition

        fault = partition(args.shape).name
        return _campaign(settings, args, [fault], 0.0, 1, (args.hold, args.hold), "partition")
    from leaderboard_tools.operator.drill import LocalTarget, Target, drill, passed, report, summary
    from leaderboard_tools.operator.kubedrill import KubeTarget

    target: Target
    if args.kube:
        target = KubeTarget(namespace=args.namespace, cluster=args.cluster, api_url=args.api_url)
    else:
        target = LocalTarget(Stack.from_settings(settings, services=True))
    results = asyncio.run(drill(target, settings, args.fault, args.count))
    print(report(results, args.json))
    return 0 if passed(summary(results)) else 1


def _chaos(settings: Settings, args: argparse.Namespace) -> int:
    from leaderboard_tools.chaos.faults import FAULTS

    wanted = [w.strip() for w in args.faults.split(",") if w.strip()]
    names = [n for n, f in FAULTS.items() if "all" in wanted or n in wanted or f.kind in wanted]
    unknown = [w for w in wanted if w != "all" and w not in FAULTS and
               w not in {f.kind for f in FAULTS.values()}]  # fmt: skip
    if unknown or not names:
        print(f"leaderboard: unknown faults {', '.join(unknown)}; known: {', '.join(FAULTS)}",
              file=sys.stderr)  # fmt: skip
        return 2
    return _campaign(settings, args, names, args.duration, args.seed, (5.0, 12.0), "chaos")


def _campaign(
    settings: Settings,
    args: argparse.Namespace,
    faults: list[str],
    duration: float,
    seed: int,
    hold: tuple[float, float],
    name: str,
) -> int:
    from pathlib import Path

    from leaderboard_tools.chaos import campaign, report
    from leaderboard_tools.chaos.world import World

    async def go() -> dict[str, Any]:
        world = World.plan(settings, members=args.members)
        try:
            await world.start()
            plan = campaign.Plan(duration, seed, faults, hold_s=hold)
            return {"name": name, **(await campaign.run(world, plan)).report()}
        finally:
            await asyncio.to_thread(world.stop)

    result = asyncio.run(go())
    written = report.save(result, Path(args.reports), name)
    print(json.dumps(result, indent=2) if args.json else report.table(result))
    print("report: " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0 if result["passed"] else 1


_COMMANDS = {
    "up": _up,
    "down": _down,
    "status": _status,
    "token": _token,
    "drill": _drill,
    "chaos": _chaos,
    "pause": _pause,
    "resume": _pause,
    "switchover": _switchover,
    "rollout": _rollout,
    "backup": backup_commands.backup,
    "backups": backup_commands.backups,
    "restore": backup_commands.restore,
}


def _reporting_stack_errors(handler: Handler) -> Handler:
    """A local stack that cannot do what was asked says why in one line (exit 1)."""

    @functools.wraps(handler)
    def run(settings: Settings, args: argparse.Namespace) -> int:
        try:
            return handler(settings, args)
        except StackError as exc:
            print(f"leaderboard: {exc}", file=sys.stderr)
            return 1

    return run
