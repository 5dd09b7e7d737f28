"""Hosts on one machine, for network faults: network namespaces on a bridge, each with its
own address, and the faults between them.

A :class:`Network` is a Linux bridge in the machine's own namespace (its address is where the
machine's processes appear from) and a namespace per :class:`Host`, joined to it by a veth
pair. Faults are carried out inside the host's namespace, so they cut or slow exactly that
host's paths: :meth:`Network.partition` drops its packets to and from some peers (or all of
them), :meth:`Network.degrade` adds loss (and latency, where tc netem exists), :meth:`Network.heal`
undoes both. Dropped, not rejected: a partitioned peer sees timeouts, as across a real
network, not a quick refusal.

Needs root (CAP_NET_ADMIN) and iproute2 and iptables; only ever routes between addresses it
made itself.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

CHAIN = "LB-CHAOS"
BASE = ipaddress.ip_network("10.213.0.0/16")


class NetworkError(Exception):
    """A command that builds or breaks the network failed; the message says which."""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    if check and done.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done


@dataclass(frozen=True)
class Host:
    name: str
    netns: str
    address: str

    def argv(self, command: Sequence[str]) -> list[str]:
        """``command`` run inside the host's namespace."""
        return ["ip", "netns", "exec", self.netns, *command]


@dataclass
class Network:
    """``name``: a few letters (interface names have at most 15 characters)."""

    name: str
    hosts: dict[str, Host] = field(default_factory=dict)
    subnet: ipaddress.IPv4Network | None = None

    @property
    def bridge(self) -> str:
        return f"lbbr-{self.name}"

    @property
    def gateway(self) -> str:
        """The machine's own address on the network (its processes appear from it)."""
        assert self.subnet is not None
        return str(self.subnet.network_address + 1)

    def create(self) -> Network:
        self.destroy()  # what a killed run of the same name left behind
        self.subnet = _free_subnet()
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        return self

    def add_host(self, name: str) -> Host:
        assert self.subnet is not None, "create() first"
        index = len(self.hosts) + 2
        host = Host(name, f"lb-{self.name}-{name}", str(self.subnet.network_address + index))
        outside, inside = f"lbv-{self.name}{index}", f"lbp-{self.name}{index}"
        _run("ip", "netns", "add", host.netns)
        _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        _run("ip", "link", "set", inside, "netns", host.netns)
        _run("ip", "link", "set", outside, "master", self.bridge, "up")
        self._in(host, "ip", "link", "set", "lo", "up")
        self._in(host, "ip", "link", "set", inside, "name", "eth0")
        self._in(host, "ip", "addr", "add", f"{host.address}/{self.subnet.prefixlen}",
                 "dev", "eth0")  # fmt: skip
        self._in(host, "ip", "link", "set", "eth0", "up")
        self._in(host, "iptables", "-N", CHAIN)
        self._in(host, "iptables", "-I", "INPUT", "-j", CHAIN)
        self._in(host, "iptables", "-I", "OUTPUT", "-j", CHAIN)
        self.hosts[name] = host
        return host

    def _in(self, host: Host, *command: str, check: bool = True) -> None:
        _run(*host.argv(command), check=check)

    # -- faults

    def partition(self, host: str, peers: Iterable[str] | None = None) -> None:
        """Drop ``host``'s packets to and from ``peers`` (host names, or ``"machine"`` for the
        machine's own processes); ``None``: from everyone."""
        target = self.hosts[host]
        if peers is None:
            addresses = [str(self.subnet)]
        else:
            addresses = [self.gateway if p == "machine" else self.hosts[p].address for p in peers]
        for address in addresses:
            self._in(target, "iptables", "-A", CHAIN, "-s", address, "-j", "DROP")
            self._in(target, "iptables", "-A", CHAIN, "-d", address, "-j", "DROP")

    def degrade(self, host: str, *, loss_pct: float = 0, delay_ms: float = 0) -> None:
        """Loss (and latency) on everything ``host`` sends. Loss is an iptables rule, which
        every kernel here has; latency needs tc's netem, which some kernels lack (the
        Firecracker kernel of this machine does): then :class:`NetworkError` says so."""
        target = self.hosts[host]
        if loss_pct:
            self._in(target, "iptables", "-A", CHAIN, "-o", "eth0", "-m", "statistic",
                     "--mode", "random", "--probability", f"{loss_pct / 100:.4f}",
                     "-j", "DROP")  # fmt: skip
        if delay_ms:
            done = _run(*target.argv(["tc", "qdisc", "replace", "dev", "eth0", "root",
                                      "netem", "delay", f"{delay_ms}ms"]), check=False)  # fmt: skip
            if done.returncode != 0:
                raise NetworkError(f"latency needs tc netem, which this kernel lacks: "
                                   f"{done.stderr.strip()}")  # fmt: skip

    def heal(self, host: str | None = None) -> None:
        for target in [self.hosts[host]] if host else list(self.hosts.values()):
            self._in(target, "iptables", "-F", CHAIN)
            self._in(target, "tc", "qdisc", "del", "dev", "eth0", "root", check=False)

    # -- teardown

    def destroy(self) -> None:
        """Remove every namespace of this network's name and the bridge (the veth pairs go
        with them), also those of an earlier run that was killed."""
        listed = _run("ip", "netns", "list", check=False).stdout.split()
        prefix = f"lb-{self.name}-"
        for netns in [n for n in listed if n.startswith(prefix)]:
            # A namespace lives on while a process holds it: stop what still runs there.
            pids = _run("ip", "netns", "pids", netns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            with contextlib.suppress(NetworkError):
                _run("ip", "netns", "del", netns)
        # The veth pairs go with their namespace, but the kernel frees a namespace later
        # (asynchronously): a new run of the same name would find `lbv-NAMEi` still there.
        # Deleting our end deletes the pair at once.
        prefix = f"lbv-{self.name}"
        for line in _run("ip", "-o", "link", "show", check=False).stdout.splitlines():
            link = line.split(":", 2)[1].strip().split("@", 1)[0]
            if link.startswith(prefix) and link[len(prefix) :].isdigit():
                _run("ip", "link", "del", link, check=False)
        self.hosts.clear()
        _run("ip", "link", "del", self.bridge, check=False)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 10.213.0.0/16 that overlaps no address of the machine's interfaces."""
    used = [
        ipaddress.ip_interface(line.split()[3]).network
        for line in _run("ip", "-o", "-4", "addr", "show").stdout.splitlines()
    ]
    for subnet in BASE.subnets(new_prefix=24):
        if not any(subnet.overlaps(network) for network in used):
            return ipaddress.IPv4Network(subnet)
    raise NetworkError(f"no free /24 in {BASE}")
