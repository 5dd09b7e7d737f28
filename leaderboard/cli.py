"""The ``leaderboard`` command: the product's components, ``api``, ``broadcaster`` and
``operator`` (what the image's containers run), and the commands that other installed
packages add through the ``leaderboard.commands`` entry point group. The development tools
(:mod:`leaderboard_tools.cli`) add the local stack, dev tokens, the drills and the chaos
campaign that way; the image installs the product alone, so it has none of them."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from leaderboard.config import Settings, SettingsError, load_settings

log = logging.getLogger("leaderboard.cli")

# A command: the settings and the parsed arguments in, the exit status out.
Handler = Callable[[Settings, argparse.Namespace], int]
# What an entry point of ``leaderboard.commands`` is: it adds its subcommands to the parser
# and returns their handlers by name.
AddCommands = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], dict[str, Handler]]

ENTRY_POINTS = "leaderboard.commands"


def _parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    parser = argparse.ArgumentParser(
        prog="leaderboard",
        description="Real-time leaderboard platform. Settings come from LEADERBOARD_* variables.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    api = sub.add_parser("api", help="run the score API (what its container runs)")
    api.add_argument("--host", help="address to bind (default: LEADERBOARD_HOST)")
    sub.add_parser("broadcaster", help="run the WebSocket broadcaster (what its container runs)")
    sub.add_parser(
        "operator", help="run the Kubernetes failover operator (kopf; what its container runs)"
    )
    handlers: dict[str, Handler] = {
        "api": _api,
        "broadcaster": _broadcaster,
        "operator": _operator,
    }
    for entry in entry_points(group=ENTRY_POINTS):
        try:
            add: AddCommands = entry.load()
        except ImportError:  # its package is not installed (the image: the product alone)
            log.debug("commands %s not available", entry.value)
            continue
        handlers.update(add(sub))
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    parser, handlers = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    try:
        settings = load_settings(verifies_tokens=args.command != "operator")
    except SettingsError as exc:
        print(f"leaderboard: {exc}", file=sys.stderr)
        return 2
    return handlers[args.command](settings, args)


def _preflight(settings: Settings, component: str, *, postgres: bool) -> bool:
    """Check the credentials and certificates once; print one line and refuse if wrong."""
    from leaderboard import connection_urls, preflight

    async def check() -> None:
        redis_url = connection_urls.redis_url(settings, component)
        await preflight.check_redis(redis_url, timeout=5.0)
        if postgres:
            await preflight.check_postgres(connection_urls.database_url(settings), timeout=5.0)

    try:
        asyncio.run(check())
    except preflight.PreflightError as exc:
        print(f"leaderboard {component}: {exc}", file=sys.stderr)
        return False
    return True


def _api(settings: Settings, args: argparse.Namespace) -> int:
    from leaderboard.api.server import serve as serve_api  # keeps the other commands light

    if not _preflight(settings, "api", postgres=True):
        return 1
    serve_api(settings, args.host)
    return 0


def _broadcaster(settings: Settings, args: argparse.Namespace) -> int:
    from leaderboard.broadcaster.server import serve as serve_broadcaster

    if not _preflight(settings, "broadcaster", postgres=False):
        return 1
    serve_broadcaster(settings)
    return 0


def _operator(settings: Settings, args: argparse.Namespace) -> int:
    from leaderboard.operator.kube import start

    start.run(settings.operator_metrics_port, settings.operator_health_port)
    return 0
