"""``make image``: build the one image, making stand-ins for base images that cannot be pulled.

Where no registry answers (this machine), the ``FROM`` images of the Dockerfile and of the
chart are made locally instead and tagged with the same names, so the Dockerfile and the chart
stay exactly what a user builds and deploys. Every stand-in starts from one Debian bookworm
``minbase`` made with debootstrap, then installs Debian's packages with the layout of the
official image it stands in for. Stand-ins trust the host's CA bundle, since a package proxy
may present its own certificate chain. The engine's image store is the cache: a stand-in or
the minbase is made once per machine.

    python -m leaderboard_tools.containers.image [--tag localhost/leaderboard:dev] [--base-only]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from leaderboard_tools.containers.engine import Engine, EngineError

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TAG = "localhost/leaderboard:dev"
MINBASE = "localhost/leaderboard-standin/debian:bookworm-minbase"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
STANDIN_LABEL = "dev.leaderboard.stand-in"

_APT = (
    "RUN apt-get update && apt-get install -y --no-install-recommends {packages} "
    "&& apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin"
)
# What Debian's slim images leave out (their /etc/dpkg/dpkg.cfg.d/docker): manuals, docs and
# translations, about 50 MB that no container reads.
_SLIM = """path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
"""
# Installing ca-certificates rewrites the bundle: the host's goes in after the packages.
_TRUST = (
    "COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n"
    'RUN printf "[global]\\ncert = /etc/ssl/certs/ca-certificates.crt\\n" > /etc/pip.conf\n'
)


@dataclass(frozen=True)
class StandIn:
    """A local replacement for an official image: what it mimics, and how it is made."""

    ref: str
    mimics: str
    steps: str
    files: Mapping[str, str] = field(default_factory=dict)  # written into the build context

    def containerfile(self) -> str:
        return f'FROM {MINBASE}\n{self.steps}{_TRUST}LABEL {STANDIN_LABEL}="{self.mimics}"\n'


PYTHON = StandIn(
    ref="docker.io/library/python:3.11-slim-bookworm",
    mimics="python:3.11-slim-bookworm: Debian's Python 3.11 (/usr/bin/python) with venv",
    steps=_APT.format(packages="python3 python3-venv python-is-python3 ca-certificates")
    + '\nENV LANG=C.UTF-8\nCMD ["python3"]\n',
)

# The official postgres image: user postgres uid/gid 999, the server binaries on PATH,
# PGDATA=/var/lib/postgresql/data, sockets in /var/run/postgresql, SIGINT to stop.
POSTGRES = StandIn(
    ref="docker.io/library/postgres:15-bookworm",
    mimics="postgres:15-bookworm: Debian's PostgreSQL 15, user postgres 999, "
    "binaries on PATH, PGDATA=/var/lib/postgresql/data",
    steps="RUN groupadd -r -g 999 postgres "
    "&& useradd -r -g postgres -u 999 -d /var/lib/postgresql -s /bin/bash postgres "
    "&& mkdir -p /etc/postgresql-common/createcluster.d "
    "&& echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/lb.conf\n"
    + _APT.format(packages="postgresql-15 postgresql-client-15 ca-certificates")
    + "\nRUN mkdir -p /var/lib/postgresql/data /var/run/postgresql "
    "&& chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql "
    "&& chmod 3777 /var/run/postgresql\n"
    "ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"
    ":/sbin:/bin PGDATA=/var/lib/postgresql/data LANG=C.UTF-8\n"
    'STOPSIGNAL SIGINT\nEXPOSE 5432\nCMD ["postgres"]\n',
)

# The official redis image: user redis uid/gid 999, redis-server on PATH, WORKDIR /data, and
# an entrypoint that runs redis-server when the arguments are only flags (a chart that sets
# `args:` alone relies on that). Its redis-server is built with protected mode off
# (unnecessary in a container); the stand-in's entrypoint turns it off instead.
_REDIS_ENTRYPOINT = """#!/bin/sh
set -e
if [ "${1#-}" != "$1" ]; then set -- redis-server "$@"; fi
if [ "$1" = redis-server ]; then shift; set -- redis-server --protected-mode no "$@"; fi
exec "$@"
"""
REDIS = StandIn(
    ref="docker.io/library/redis:7.2-bookworm",
    mimics="redis:7.2-bookworm: Debian's redis-server (7.0), user redis 999, /data",
    steps="RUN groupadd -r -g 999 redis && useradd -r -g redis -u 999 redis\n"
    + _APT.format(packages="redis-server redis-tools ca-certificates")
    + "\nCOPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh\n"
    "RUN chmod 755 /usr/local/bin/docker-entrypoint.sh && mkdir -p /data "
    "&& chown redis:redis /data\nWORKDIR /data\n"
    'ENTRYPOINT ["docker-entrypoint.sh"]\nEXPOSE 6379\nCMD ["redis-server"]\n',
    files={"docker-entrypoint.sh": _REDIS_ENTRYPOINT},
)

STANDINS = {s.ref: s for s in (PYTHON, POSTGRES, REDIS)}


def say(line: str) -> None:
    print(f"image: {line}", flush=True)


def canonical(ref: str) -> str:
    """``postgres:15`` -> ``docker.io/library/postgres:15``, as the engines name it."""
    name = ref.split("/")[0]
    if "/" not in ref:
        return f"docker.io/library/{ref}"
    if "." not in name and ":" not in name and name != "localhost":
        return f"docker.io/{ref}"
    return ref


def debian_mirror() -> str:
    """The Debian mirror the host's apt uses (a proxy on some machines), else the default."""
    for path in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        if path.exists():
            match = re.search(r"^(?:URIs:|deb)\s+(\S+)", path.read_text(), re.M)
            if match:
                return match.group(1)
    return DEFAULT_MIRROR


def ensure_minbase(engine: Engine) -> None:
    """The Debian bookworm minbase every stand-in starts from (debootstrap, once)."""
    if engine.image_exists(MINBASE):
        return
    if not shutil.which("debootstrap"):
        raise EngineError(
            "making a stand-in base needs debootstrap (as root: apt-get install -y debootstrap)"
        )
    say(f"making {MINBASE} with debootstrap (about a minute, once per machine)")
    with tempfile.TemporaryDirectory(prefix="lb-minbase-") as tmp:
        root = Path(tmp) / "rootfs"
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(root), debian_mirror()],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise EngineError(f"debootstrap failed: {(done.stderr or done.stdout)[-2000:]}")
        _slim(root)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        try:
            engine.stream(
                ["import", "-", MINBASE], stdin=tar.stdout.fileno() if tar.stdout else None
            )
        finally:
            if tar.stdout:
                tar.stdout.close()
            tar.wait()


def _slim(root: Path) -> None:
    """What debootstrap left that no container needs: the downloaded packages and lists, and
    what ``_SLIM`` keeps out of every later install."""
    (root / "etc/dpkg/dpkg.cfg.d/slim").write_text(_SLIM)
    share = root / "usr/share"
    doomed = [root / "var/cache/apt/archives", root / "var/lib/apt/lists", share / "doc"]
    doomed += [share / "man", share / "groff", share / "info", share / "locale"]
    for folder in doomed:
        for entry in folder.rglob("*"):
            keep = entry.name in ("copyright", "locale.alias")
            if (entry.is_file() or entry.is_symlink()) and not keep:
                entry.unlink()


def ensure_base(engine: Engine, ref: str) -> None:
    """REF is in the engine's store: already there, pulled, or made as a stand-in."""
    ref = canonical(ref)
    if engine.image_exists(ref) or engine.pull(ref):
        return
    standin = STANDINS.get(ref)
    if standin is None:
        raise EngineError(f"cannot pull {ref} and no stand-in is known for it")
    ensure_minbase(engine)
    say(f"{ref} cannot be pulled: making a stand-in ({standin.mimics})")
    with tempfile.TemporaryDirectory(prefix="lb-standin-") as tmp:
        context = Path(tmp)
        (context / "Containerfile").write_text(standin.containerfile())
        for name, text in standin.files.items():
            (context / name).write_text(text)
        shutil.copyfile(HOST_CA_BUNDLE, context / "ca-certificates.crt")
        engine.stream(["build", "--network", "host", "-t", ref, "-f",
                       str(context / "Containerfile"), str(context)])  # fmt: skip


def dockerfile_bases(dockerfile: Path) -> list[str]:
    """The ``FROM`` images of a Dockerfile, with its ``ARG`` defaults filled in."""
    text = dockerfile.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    stages = set(re.findall(r"^FROM \S+ AS (\S+)", text, re.M | re.I))
    bases = []
    for ref in re.findall(r"^FROM (\S+)", text, re.M):
        ref = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), ref)
        if ref not in stages and ref not in bases:
            bases.append(ref)
    return bases


def build(engine: Engine, tag: str) -> None:
    """The image from the repository's Dockerfile, tagged TAG."""
    for base in dockerfile_bases(REPO / "Dockerfile"):
        ensure_base(engine, base)
    say(f"building {tag} with {engine.name}")
    engine.stream(["build", "--network", "host", "-t", tag, str(REPO)])
    size = int(engine.inspect(tag, "{{.Size}}"))
    say(f"built {tag}: {size / 1e6:.0f} MB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard_tools.containers.image")
    parser.add_argument("--tag", default=DEFAULT_TAG, help="name of the image to build")
    parser.add_argument(
        "--base", action="append", default=[], metavar="REF",
        help="only make sure REF is there (pulled or a stand-in); repeatable",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        engine = Engine.detect()
        if args.base:
            for ref in args.base:
                ensure_base(engine, ref)
        else:
            build(engine, args.tag)
    except EngineError as error:
        print(f"image: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
