"""Session fixtures: a real PostgreSQL primary + synchronous standby and a real Redis,
started by the tests in a temporary folder on free ports, and always torn down."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import pytest_asyncio
import uvloop

from leaderboard_tools.devstack.stack import Stack
from tests.apiclient import api, empty_board, new_user, unlimited
from tests.support import test_settings

__all__ = ["api", "empty_board", "new_user", "unlimited"]  # fixtures shared by every folder


def _traversable_tmpdir(prefix: str) -> Path:
    # pytest's tmp_path is private (0700) and PostgreSQL runs as `postgres` when we are root:
    # the stacks live in folders that user may enter.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A fresh folder for one test's own stack (`<run_dir>/run` does not exist yet)."""
    path = _traversable_tmpdir("lb-test-")
    try:
        yield path / "run"
    finally:
        shutil.rmtree(path, ignore_errors=True)


@asynccontextmanager
async def own_cluster(prefix: str, *, tls: bool = False, members: int = 2) -> AsyncIterator[Stack]:
    """A PostgreSQL primary + synchronous standby and a Redis, started and always removed
    (``tls``: the stack's TLS mode, every connection encrypted and authenticated)."""
    root = _traversable_tmpdir(prefix)
    cluster = Stack.from_settings(test_settings(root / "run", members, tls=tls))
    try:
        await cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest_asyncio.fixture(scope="session")
async def stack() -> AsyncIterator[Stack]:
    """The shared cluster. Tests must leave it as they found it (primary member0, all up)."""
    async with own_cluster("lb-stack-") as cluster:
        yield cluster


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Tests run on uvloop, as the services do in production (its transports differ)."""
    return {"uvloop": uvloop.new_event_loop}
