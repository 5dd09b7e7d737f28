"""From probe results to the members :func:`~leaderboard.operator.decide.decide` reads: the
one step both shells take (local processes, Kubernetes pods), so that a missed probe, a
stalled replica and a synchronous candidate mean the same in both.

Per cluster it keeps the probes missed in a row, the stalls (:class:`Stalls`) and the
synchronous candidates (:func:`remember_candidates`); a promotion starts them afresh."""

from __future__ import annotations

from leaderboard.operator.decide import Member, remember_candidates
from leaderboard.operator.probe import Archiver, Probe, Stalls


class Observations:
    def __init__(self) -> None:
        self.failures: dict[str, int] = {}
        self.stalls = Stalls()
        # May hold the newest acknowledged write (see remember_candidates).
        self.sync_candidates: frozenset[str] = frozenset()
        self.sync_streaming: frozenset[str] = frozenset()  # what the primary reports now
        self.archiver: Archiver | None = None  # the primary's, as last probed

    def missed(
        self, name: str, *, running: bool, terminating: bool = False, counted: bool = True
    ) -> Member:
        """A probe that failed (refused, timed out, starting up). ``counted=False``: a member
        that is known to be busy starting (not answering is expected; nothing is counted)."""
        failed = self.failures.get(name, 0) + 1 if counted else 0
        self.failures[name] = failed
        return Member(
            name, reachable=False, failed_probes=failed, running=running, terminating=terminating
        )

    def answered(
        self,
        name: str,
        seen: Probe,
        *,
        primary: str | None,
        members: frozenset[str],
        upstream: str | None,
        running: bool,
        terminating: bool = False,
    ) -> Member:
        """A probe that answered; ``upstream``: the member it streams from, if it streams."""
        self.failures[name] = 0
        stalled = self.stalls.see(name, seen)
        if not seen.in_recovery and name == primary:
            self.sync_streaming = seen.sync_standbys
            self.archiver = seen.archiver
            self.sync_candidates = remember_candidates(
                self.sync_candidates, seen.sync_standbys, members
            )
        return Member(
            name,
            reachable=True,
            role="replica" if seen.in_recovery else "primary",
            lsn=seen.lsn,
            timeline=seen.timeline,
            upstream=upstream if seen.upstream_port is not None else None,
            running=running,
            terminating=terminating,
            sync_standbys_enabled=bool(seen.sync_names.strip()),
            stalled_probes=stalled,
        )

    def gone(self, name: str) -> Member:
        """A member whose process or pod is gone altogether: a miss, not running."""
        return self.missed(name, running=False)

    def promoted(self) -> None:
        """A new primary: its candidates are seen afresh, and nothing missed before counts."""
        self.sync_candidates = frozenset()
        self.failures.clear()
        self.stalls.reset()

    def rejoined(self, name: str) -> None:
        self.failures[name] = 0
        self.stalls.reset(name)
