"""The container engine's command line: podman, or docker where a docker engine answers.

A thin wrapper: every call is an argv list, its output captured, and a failure raises
:class:`EngineError` with the command and what the engine said. On podman the settings that
work on this machine (netavark for name resolution, runc, cgroupfs, limits the sandbox
allows) come from ``containers.conf`` beside this file, through ``CONTAINERS_CONF``, so
nothing under ``/etc`` needs to change.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CONTAINERS_CONF = Path(__file__).with_name("containers.conf")


class EngineError(Exception):
    """A container-engine command failed; the message says which and why."""


@dataclass(frozen=True)
class Engine:
    """One container engine's CLI (``podman`` or ``docker``)."""

    name: str
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def detect(cls) -> Engine:
        """Podman when it is installed (it needs no daemon), else a docker engine that
        answers; otherwise an error that says how to get one."""
        if shutil.which("podman"):
            return cls("podman", {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)})
        if shutil.which("docker"):
            done = subprocess.run(
                ["docker", "info", "--format", "{{.ServerVersion}}"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if done.returncode == 0:
                return cls("docker", dict(os.environ))
        raise EngineError(
            "no container engine: install podman (as root: apt-get install -y "
            "--no-install-recommends podman runc netavark aardvark-dns) or start a docker engine"
        )

    def run(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 600,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``ENGINE ARGS...``, output captured; raises :class:`EngineError` on failure.
        ``env``: the engine's environment for this call (``--env NAME`` takes values from it,
        so secrets stay out of the process list)."""
        done = subprocess.run(
            [self.name, *args], capture_output=True, text=True,
            env=dict(env if env is not None else self.env), check=False, timeout=timeout,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise EngineError(
                f"{self.name} {' '.join(args[:3])}... failed ({done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-2000:]}"
            )
        return done

    def stream(self, args: Sequence[str], *, stdin: int | None = None) -> None:
        """``ENGINE ARGS...`` with its output shown as it comes (long builds)."""
        done = subprocess.run([self.name, *args], stdin=stdin, env=dict(self.env), check=False)
        if done.returncode != 0:
            raise EngineError(f"{self.name} {' '.join(args[:3])}... failed ({done.returncode})")

    def image_exists(self, ref: str) -> bool:
        args = ("image", "exists", ref) if self.name == "podman" else ("image", "inspect", ref)
        return self.run(*args, check=False).returncode == 0

    def pull(self, ref: str) -> bool:
        """True when the engine could pull REF (no registry answers on some machines)."""
        return self.run("pull", "--quiet", ref, check=False, timeout=300).returncode == 0

    def forget_stale_dns(self) -> list[str]:
        """Remove what podman's name server (aardvark-dns) kept of networks that are gone.

        netavark writes one file per network, headed by the network's gateway, and deletes it
        when the network's last container is torn down. A run killed mid-way skips that
        teardown: the file outlives its network, and a network created later under the same
        name gets its entries appended below the old gateway, where the name server answers
        nothing. Likewise a ``aardvark.pid`` naming a dead or zombie process keeps netavark
        from starting a new name server. Both are removed here; returns what was.
        """
        if self.name != "podman":
            return []
        directory = aardvark_dir()
        if not directory.is_dir():
            return []
        removed = []
        for path in sorted(directory.iterdir()):
            if path.name == "aardvark.pid":
                if _process_alive(path.read_text().strip()):
                    continue
            elif self.run("network", "exists", path.name, check=False).returncode == 0:
                continue
            path.unlink(missing_ok=True)
            removed.append(path.name)
        return removed

    def inspect(self, ref: str, template: str) -> str:
        return self.run("image", "inspect", "--format", template, ref).stdout.strip()


def aardvark_dir() -> Path:
    """Where netavark keeps aardvark-dns's configuration (rootful or rootless podman)."""
    if os.geteuid() == 0:
        return Path("/run/containers/networks/aardvark-dns")
    runtime = os.environ.get("XDG_RUNTIME_DIR", f"/run/user/{os.geteuid()}")
    return Path(runtime) / "containers" / "networks" / "aardvark-dns"


def _process_alive(pid: str) -> bool:
    """A running process (a zombie answers signals but serves nothing)."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (ValueError, OSError):
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
