"""Redis ACL users, one per component, each allowed only what that component does.

- ``api``: its keys (the ranking, the published state, rate-limit counters), its scripts
  (which ZADD, compare and PUBLISH), nothing dangerous (no FLUSHALL, KEYS, CONFIG, DEBUG...);
- ``broadcaster``: SUBSCRIBE to every board's updates channel and read its last published
  message;
- ``default``: the administrator (rebuilds by hand, the stack's own checks, probes).

The chart renders the same rules (``charts/leaderboard/templates/redis.yaml``); a test keeps
the two equal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from leaderboard.cache.keys import Keys

COMPONENTS = ("api", "broadcaster")


def rules(component: str, keys: Keys) -> str:
    """The ACL rules of ``component``'s user, without its password."""
    prefix = keys.prefix
    boards = keys.board("*")  # every board but the all-time one (glob patterns)
    channels = f"resetchannels &{keys.updates} &{boards.updates}"
    if component == "api":
        return (
            f"resetkeys ~{prefix}leaderboard:* ~{prefix}ratelimit:* {channels} "
            "-@all +@read +@write +@scripting +@connection +publish +time -@dangerous"
        )
    if component == "broadcaster":
        return (
            f"resetkeys %R~{keys.top10} %R~{boards.top10} {channels} "
            "-@all +@connection +subscribe +unsubscribe +hget -@dangerous"
        )
    raise ValueError(f"no Redis user for {component!r}")


def acl_file(admin_password: str, passwords: Mapping[str, str], keys: Keys) -> str:
    """An ``--aclfile``: passwords stored as SHA-256 (Redis's ``#<hash>`` form)."""
    lines = [f"user default on #{_sha256(admin_password)} ~* &* +@all"]
    for component in COMPONENTS:
        lines.append(
            f"user {component} on #{_sha256(passwords[component])} {rules(component, keys)}"
        )
    return "\n".join(lines) + "\n"


def _sha256(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()
