"""``leaderboard api``: serve the API with uvicorn (uvloop + httptools).

With ``LEADERBOARD_API_WORKERS=N`` (N > 1) it runs N server processes, each with its own
listening socket bound with ``SO_REUSEPORT``: the kernel spreads new connections across them.
uvicorn's own ``--workers`` shares one socket, and long-lived keep-alive connections then tend
to pile onto one worker. In Kubernetes run one worker per pod and scale pods instead; each
process exports its own /metrics.
"""

from __future__ import annotations

import multiprocessing
import signal
import socket
import sys

import uvicorn

from leaderboard.config import Settings


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_uvicorn(app: str, host: str, port: int, *, factory: bool = False) -> None:
    """Serve the ASGI app ``app`` ("module:attribute") on ``host:port`` until SIGTERM, with the
    API's server settings (the benchmark's bare endpoint runs on the same ones)."""
    config = uvicorn.Config(
        app,
        factory=factory,
        loop="uvloop",
        http="httptools",
        access_log=False,  # the metrics count every request; a log line each costs ~10%
        timeout_graceful_shutdown=20,
        proxy_headers=False,  # nothing uses the client address; saves a middleware per request
        server_header=False,
        log_level="info",
    )
    uvicorn.Server(config).run(sockets=[_listen(host, port)])


def _run_one(settings: Settings, host: str) -> None:
    run_uvicorn("leaderboard.api.app:create_app", host, settings.api_port, factory=True)


def serve(settings: Settings, host: str | None = None) -> None:
    host = host or settings.host
    if settings.api_workers == 1:
        _run_one(settings, host)
        return
    context = multiprocessing.get_context("spawn")  # a clean interpreter per worker
    workers = [
        context.Process(target=_run_one, args=(settings, host), name=f"api-{i}")
        for i in range(settings.api_workers)
    ]
    for worker in workers:
        worker.start()

    def forward(_signum: int, _frame: object) -> None:
        for worker in workers:  # each drains its in-flight requests, then exits
            if worker.is_alive():
                worker.terminate()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for worker in workers:
        worker.join()
    failed = [w.name for w in workers if w.exitcode not in (0, -signal.SIGTERM)]
    sys.exit(1 if failed else 0)
