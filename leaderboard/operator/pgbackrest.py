"""pgBackRest, the tool that archives WAL, takes base backups and restores them: its
configuration, its command lines and what its ``info`` says, with no I/O of our own.

Why pgBackRest (docs/backups.md): it archives asynchronously (``archive-push`` returns at
once and a background process ships batches, so a slow repository does not hold up the
archiver), accepts the same segment pushed twice with the same checksum, follows timelines
(history files, ``.partial`` segments), keeps a folder, S3, Azure or GCS repository, enforces
retention and restores to a time (``--type=time``). Barman Cloud runs a Python process per
pushed segment; WAL-G is in no registry here.

Both shells use this: the local stack runs the commands itself, the Kubernetes shell will run
them in the members' pods.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STANZA = "leaderboard"


@dataclass(frozen=True)
class Repository:
    """Where backups and archived WAL go: a folder (``path``) or an S3 bucket."""

    path: Path | None = None  # folder repository
    s3_endpoint: str = ""  # host[:port]; S3 is always HTTPS with pgBackRest
    s3_bucket: str = ""
    s3_region: str = "us-east-1"
    s3_prefix: str = "/leaderboard"  # the path inside the bucket
    s3_key: str = ""
    s3_key_secret: str = ""
    s3_ca_file: Path | None = None  # verify the endpoint against this CA
    retention_full: int = 2  # full backups kept (with the WAL they need)

    @property
    def kind(self) -> str:
        return "s3" if self.s3_bucket else "posix"

    def describe(self) -> str:
        if self.kind == "s3":
            return f"s3://{self.s3_bucket}{self.s3_prefix} at {self.s3_endpoint}"
        return str(self.path)


def config(repo: Repository, *, work_dir: Path, stanza: str = STANZA) -> str:
    """``pgbackrest.conf``: the repository and pgBackRest's own folders under ``work_dir``.
    The member (``pg1-path``, port, socket) is given on each command line: every member
    archives its own WAL with the same file."""
    lines = ["[global]"]
    if repo.kind == "s3":
        host, _, port = repo.s3_endpoint.partition(":")
        lines += [
            "repo1-type=s3",
            f"repo1-path={repo.s3_prefix}",
            f"repo1-s3-endpoint={host}",
            f"repo1-s3-bucket={repo.s3_bucket}",
            f"repo1-s3-region={repo.s3_region}",
            f"repo1-s3-key={repo.s3_key}",
            f"repo1-s3-key-secret={repo.s3_key_secret}",
            "repo1-s3-uri-style=path",
        ]
        if port:
            lines.append(f"repo1-storage-port={port}")
        if repo.s3_ca_file is not None:
            lines.append(f"repo1-storage-ca-file={repo.s3_ca_file}")
    else:
        assert repo.path is not None, "a folder repository needs a path"
        lines.append(f"repo1-path={repo.path}")
    lines += [
        f"repo1-retention-full={repo.retention_full}",
        f"log-path={work_dir / 'log'}",
        f"lock-path={work_dir / 'lock'}",
        f"spool-path={work_dir / 'spool'}",
        "archive-async=y",  # archive_command returns at once; a background push ships batches
        "archive-timeout=30",
        "compress-type=lz4",  # a fraction of gzip's CPU; WAL compresses well enough
        "start-fast=y",  # a backup starts with an immediate checkpoint
        "log-level-console=warn",
        "log-level-file=info",
        "",
        f"[{stanza}]",
        "",
    ]
    return "\n".join(lines)


def member_options(data_dir: Path, port: int, socket_dir: Path) -> list[str]:
    """The one member a command works on (``pg1``)."""
    return [f"--pg1-path={data_dir}", f"--pg1-port={port}", f"--pg1-socket-path={socket_dir}"]


def archive_command(
    binary: str, config_path: Path, data_dir: Path, *options: str, stanza: str = STANZA
) -> str:
    extra = "".join(f"{option} " for option in options)
    return (
        f"{binary} --config={config_path} --stanza={stanza} --pg1-path={data_dir} "
        f"{extra}archive-push %p"
    )


def restore_command(binary: str, config_path: Path, data_dir: Path, stanza: str = STANZA) -> str:
    return (
        f"{binary} --config={config_path} --stanza={stanza} --pg1-path={data_dir} "
        'archive-get %f "%p"'
    )


@dataclass(frozen=True)
class Backup:
    id: str
    started_at: dt.datetime
    finished_at: dt.datetime
    bytes: int  # what it takes in the repository (compressed; an incremental's own files)
    stop_lsn: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "bytes": self.bytes,
        }


@dataclass(frozen=True)
class Info:
    backups: tuple[Backup, ...]
    archive_min: str | None  # the first and last WAL segment in the repository
    archive_max: str | None
    status: str  # pgBackRest's word on the stanza ("ok", "no valid backups", an error)

    @property
    def usable(self) -> bool:
        """The repository answered and holds the stanza (status codes 0 and 2; "missing
        stanza path", "other" and the rest mean archiving cannot work either)."""
        return self.status in ("ok", "no valid backups")

    @property
    def recoverable_from(self) -> dt.datetime | None:
        """The earliest point a restore can reach: the end of the oldest backup (a backup is
        consistent only once its last WAL is replayed)."""
        return min((b.finished_at for b in self.backups), default=None)


def parse_info(stanzas: list[dict[str, Any]], stanza: str = STANZA) -> Info:
    """``pgbackrest info --output=json``."""
    found = next((s for s in stanzas if s.get("name") == stanza), None)
    if found is None:
        return Info((), None, None, "missing stanza")
    backups = tuple(
        Backup(
            id=b["label"],
            started_at=_utc(b["timestamp"]["start"]),
            finished_at=_utc(b["timestamp"]["stop"]),
            bytes=int(b["info"]["repository"]["delta"]),
            stop_lsn=b.get("lsn", {}).get("stop", ""),
        )
        for b in found.get("backup", [])
    )
    archives = found.get("archive", [])
    mins = [a["min"] for a in archives if a.get("min")]
    maxes = [a["max"] for a in archives if a.get("max")]
    status = found.get("status", {}).get("message", "")
    return Info(backups, min(mins, default=None), max(maxes, default=None), status)


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)
