"""`leaderboard api` as its container runs it: uvicorn, real sockets, SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from collections.abc import Callable

from leaderboard import auth
from leaderboard_tools.devstack.stack import Stack
from tests.apiclient import api_settings
from tests.support import free_ports, start_component, wait_until


def _connectable(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_sigterm_stops_accepting_and_finishes_the_request_in_flight(
    stack: Stack, new_user: Callable[[], str]
) -> None:
    port = free_ports(1)[0]
    settings = api_settings(stack, api_port=port)
    proc = start_component(
        stack, "api", port, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        user = new_user()
        body = json.dumps({"actionId": "verify-email"}).encode()
        token = auth.mint(settings, user)
        head = (
            f"POST /api/action/complete HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(head + body[:5])  # the request is now in flight
            proc.send_signal(signal.SIGTERM)
            wait_until(lambda: not _connectable(port), timeout=10)  # no longer accepting
            conn.sendall(body[5:])
            received = b""
            while chunk := conn.recv(65536):  # the server closes it: it is shutting down
                received += chunk
            response = received.decode()
        assert response.startswith("HTTP/1.1 200"), response
        assert f'"userId":"{user}"' in response
        # uvicorn shuts down cleanly, then re-raises SIGTERM so the exit status tells why.
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        output = proc.stdout.read() if proc.stdout else ""
        if proc.stdout:
            proc.stdout.close()
    assert "Traceback" not in output
    assert "Finished server process" in output
