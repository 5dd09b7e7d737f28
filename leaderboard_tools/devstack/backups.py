"""Backups of the local stack with pgBackRest: every member archives its WAL, base backups on
demand, the recoverable window.

Layout::

    RUN_DIR/backups/pgbackrest.conf   the repository (a folder, or S3 from the settings)
    RUN_DIR/backups/repo/             the folder repository (default)
    RUN_DIR/backups/log|lock|spool/   pgBackRest's own folders
    RUN_DIR/backups/flushed.json      the last moment known to be in the archive

PostgreSQL runs pgBackRest as its own OS user (``archive_command``), so the folders belong to
that user; our commands run as it too.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path
from typing import Any

from leaderboard.config import Settings
from leaderboard.operator import pgbackrest
from leaderboard.operator.pgbackrest import STANZA, Info, Repository
from leaderboard_tools.devstack.postgres import Member
from leaderboard_tools.devstack.process import OsUser, StackError, run

SEGMENT = re.compile(r"[0-9A-F]{24}")


def binary() -> str:
    found = shutil.which("pgbackrest")
    if found is None:
        raise StackError("pgbackrest is not installed (`make install` installs it)")
    return found


def repository(settings: Settings, run_dir: Path) -> Repository:
    secret = settings.backup_s3_key_secret
    return Repository(
        path=settings.backup_repo_path or run_dir / "backups" / "repo",
        s3_endpoint=settings.backup_s3_endpoint,
        s3_bucket=settings.backup_s3_bucket,
        s3_region=settings.backup_s3_region,
        s3_prefix=settings.backup_s3_prefix,
        s3_key=settings.backup_s3_key,
        s3_key_secret=secret.get_secret_value() if secret else "",
        s3_ca_file=settings.backup_s3_ca_file,
        retention_full=settings.backup_retention_full,
    )


class Backups:
    def __init__(self, run_dir: Path, user: OsUser) -> None:
        self.dir = run_dir / "backups"
        self.user = user

    @property
    def config_path(self) -> Path:
        return self.dir / "pgbackrest.conf"

    @property
    def configured(self) -> bool:
        return self.config_path.exists()

    def configure(self, repo: Repository) -> None:
        """Write the configuration (once per stack: ``up`` keeps the repository it began
        with, so a later change of settings cannot split the archive in two)."""
        if self.configured:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        folders = [self.dir / name for name in ("log", "lock", "spool")]
        if repo.path is not None and repo.kind == "posix":
            folders.append(repo.path)
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        self.user.own(self.dir, *folders)
        text = pgbackrest.config(repo, work_dir=self.dir)
        self.config_path.write_text(text)
        self.config_path.chmod(0o600)  # it may hold the S3 secret
        self.user.own(self.config_path)

    def archive_options(self, member: Member) -> list[str]:
        """``postgres`` options that make ``member`` archive its WAL while it is the primary.
        ``on``, not ``always``: pgBackRest wants one archiver per repository (a standby's copy
        of a segment may differ in its unused tail). A standby marks what it receives as
        archived, so segments the old primary had not pushed when it died are missing until
        pushed again (docs/backups.md, open)."""
        # Its own queue and lock: a member that hangs (SIGSTOP) with its background push must
        # not hold up the archiving of the member promoted in its place.
        own = [f"--spool-path={self.dir / 'spool' / member.name}"]
        own.append(f"--lock-path={self.dir / 'lock' / member.name}")
        command = pgbackrest.archive_command(binary(), self.config_path, member.data_dir, *own)
        return ["-c", "archive_mode=on", "-c", f"archive_command={command}"]

    def _run(self, *args: str, member: Member | None = None, timeout: float = 120.0) -> str:
        argv = [binary(), f"--config={self.config_path}", f"--stanza={STANZA}"]
        if member is not None:
            argv += pgbackrest.member_options(member.data_dir, member.port, member.sock_dir)
        return run([*argv, *args], user=self.user, timeout=timeout, what=f"pgbackrest {args[0]}")

    def create_stanza(self, primary: Member) -> None:
        self._run("stanza-create", member=primary)

    def backup(self, member: Member, *, kind: str = "full") -> str:
        """A base backup from ``member`` (the primary); returns its id."""
        before = {b.id for b in self.info().backups}
        self._run("backup", f"--type={kind}", member=member, timeout=1800)
        new = [b.id for b in self.info().backups if b.id not in before]
        if not new:
            raise StackError("pgbackrest backup finished but no new backup is listed")
        return new[-1]

    def push_received(self, member: Member) -> list[str]:
        """After ``member``'s promotion: push the complete segments of earlier timelines that
        it received as a standby. A standby treats what it streams as archived already
        (``archive_mode = on``), so segments the dead primary had not pushed yet would be
        missing from the repository and a restore could not replay past the gap. Which they
        are: every earlier-timeline segment before the one the new timeline begins in (that
        one PostgreSQL archives itself, as ``.partial``); a ``.done`` marker is not enough,
        since the walreceiver writes it only when the next segment begins. They are the
        bytes the old primary wrote, so a segment it did push is recognised (same checksum)
        and skipped. Returns the segments handed over."""
        wal = member.data_dir / "pg_wal"
        segments = [
            (int(p.name[:8], 16), p.name) for p in wal.iterdir() if SEGMENT.fullmatch(p.name)
        ]
        if not segments:
            return []
        newest = max(timeline for timeline, _ in segments)
        begins = min(_number(name) for timeline, name in segments if timeline == newest)
        received = sorted(
            name for timeline, name in segments if timeline < newest and _number(name) < begins
        )
        for name in received:
            self._run(
                "archive-push", f"--pg1-path={member.data_dir}", "--no-archive-async",
                str(wal / name),
            )  # fmt: skip
        return received

    def run_restore(self, member: Member, options: list[str]) -> None:
        """``pgbackrest restore`` into ``member``'s (absent) data directory, from the newest
        backup that precedes the target; it writes the ``restore_command`` too."""
        member.data_dir.mkdir(mode=0o700, parents=True)
        self.user.own(member.data_dir)
        self._run("restore", f"--pg1-path={member.data_dir}", *options, timeout=1800)

    def flush(self, primary: Member) -> dt.datetime:
        """Switch the primary to a new WAL segment and wait until the one it closed is in the
        repository (``pgbackrest check``): everything committed before the returned moment
        can be restored."""
        at = dt.datetime.now(dt.UTC)
        self._run("check", member=primary, timeout=90)
        (self.dir / "flushed.json").write_text(json.dumps({"at": pgbackrest.iso(at)}) + "\n")
        return at

    def last_flushed(self) -> dt.datetime | None:
        try:
            text = json.loads((self.dir / "flushed.json").read_text())["at"]
        except (OSError, ValueError, KeyError):
            return None
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))

    def info(self) -> Info:
        return pgbackrest.parse_info(json.loads(self._run("info", "--output=json")))

    def window(self, info: Info) -> dict[str, Any]:
        """The contract's ``backups`` answer."""
        start = info.recoverable_from
        until = self.last_flushed()
        if start is not None:
            start += dt.timedelta(seconds=1)  # pgBackRest's stop time is whole seconds
        return {
            "backups": [b.to_json() for b in info.backups],
            "recoverable_from": pgbackrest.iso(start) if start else None,
            "recoverable_until": pgbackrest.iso(until) if start and until else None,
        }


def _number(segment: str) -> int:
    """A WAL segment's position in the log, whatever its timeline."""
    return int(segment[8:], 16)
