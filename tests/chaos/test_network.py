"""The hosts the chaos drills run on: network namespaces on a bridge, and the faults between
them, checked with real connections (a TCP server inside one host, clients in another host
and on the machine itself)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from leaderboard_tools.chaos.network import Network
from tests.support import wait_until

# Slow: deselected by `make test-fast`; a stack, drill or build of its own takes minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PORT = 7000
SERVER = (
    "import socket, sys\n"
    "s = socket.create_server((sys.argv[1], int(sys.argv[2])))\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'hi'); c.close()\n"
)
CLIENT = (
    "import socket, sys\n"
    "try:\n"
    "    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1) as c:\n"
    "        print(c.recv(2).decode())\n"
    "except OSError as e:\n"
    "    print(type(e).__name__)\n"
)


@pytest.fixture
def net() -> Iterator[Network]:
    network = Network("t").create()
    try:
        network.add_host("a")
        network.add_host("b")
        host = network.hosts["a"]
        server = subprocess.Popen(
            host.argv([sys.executable, "-c", SERVER, host.address, str(PORT)]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: _from_machine(network) == "hi", timeout=10)
            yield network
        finally:
            server.kill()
            server.wait()
    finally:
        network.destroy()


def _from_machine(net: Network) -> str:
    try:
        with socket.create_connection((net.hosts["a"].address, PORT), timeout=1) as c:
            return c.recv(2).decode()
    except OSError as exc:
        return type(exc).__name__


def _from_b(net: Network) -> str:
    b, a = net.hosts["b"], net.hosts["a"]
    done = subprocess.run(
        b.argv([sys.executable, "-c", CLIENT, a.address, str(PORT)]),
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def test_hosts_reach_each_other_and_the_machine_reaches_them(net: Network) -> None:
    assert _from_machine(net) == "hi"
    assert _from_b(net) == "hi"
    assert net.hosts["a"].address != net.hosts["b"].address


def test_a_partition_from_one_peer_cuts_only_that_path(net: Network) -> None:
    net.partition("a", ["b"])
    assert _from_b(net) == "TimeoutError"  # dropped, not refused: as across a network
    assert _from_machine(net) == "hi"
    net.heal("a")
    assert _from_b(net) == "hi"


def test_a_full_partition_cuts_every_path_until_healed(net: Network) -> None:
    net.partition("a")
    assert _from_machine(net) == "TimeoutError"
    assert _from_b(net) == "TimeoutError"
    net.heal()
    assert _from_machine(net) == "hi" and _from_b(net) == "hi"


def test_loss_drops_that_share_of_what_the_host_sends(net: Network) -> None:
    net.degrade("a", loss_pct=100)  # every reply lost: the machine's connections time out
    assert _from_machine(net) == "TimeoutError"
    net.heal("a")
    net.degrade("a", loss_pct=1)
    answers = [_from_machine(net) for _ in range(5)]
    net.heal("a")
    assert answers.count("hi") >= 3  # TCP retransmits what 1 % loses, mostly in time


def test_destroy_leaves_no_namespace_behind() -> None:
    network = Network("u").create()
    network.add_host("x")
    netns = network.hosts["x"].netns
    network.destroy()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert netns not in listed
    links = subprocess.run(["ip", "link", "show"], capture_output=True, text=True).stdout
    assert network.bridge not in links
