"""A real S3 server for the backup tests: moto's server, over HTTPS (pgBackRest speaks S3 only
over TLS) with a certificate from a CA of its own, and one bucket."""

from __future__ import annotations

import contextlib
import secrets
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from leaderboard.certs import TlsFiles
from leaderboard_tools.devstack.ports import free_ports
from tests.support import REPO, wait_until

HOST = "127.0.0.1"


@dataclass(frozen=True)
class ObjectStore:
    endpoint: str  # host:port
    bucket: str
    ca_file: Path
    key: str
    key_secret: str

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    @property
    def url(self) -> str:
        return f"https://{self.endpoint}"

    def env(self, prefix: str = "/leaderboard") -> dict[str, str]:
        """The stack's settings that put its backup repository in this bucket."""
        return {
            "LEADERBOARD_BACKUP_S3_BUCKET": self.bucket,
            "LEADERBOARD_BACKUP_S3_ENDPOINT": self.endpoint,
            "LEADERBOARD_BACKUP_S3_PREFIX": prefix,
            "LEADERBOARD_BACKUP_S3_KEY": self.key,
            "LEADERBOARD_BACKUP_S3_KEY_SECRET": self.key_secret,
            "LEADERBOARD_BACKUP_S3_CA_FILE": str(self.ca_file),
        }

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under PREFIX (the S3 ListObjectsV2 call, paged)."""
        found: list[str] = []
        token = ""
        with httpx.Client(verify=self.tls_context(), timeout=10) as client:
            while True:
                params = {"list-type": "2", "prefix": prefix.lstrip("/")}
                if token:
                    params["continuation-token"] = token
                body = client.get(f"{self.url}/{self.bucket}", params=params).text
                found += _between_all(body, "<Key>", "</Key>")
                token = next(iter(_between_all(body, "<NextContinuationToken>", "<")), "")
                if not token:
                    return found


def _between_all(text: str, start: str, end: str) -> list[str]:
    out = []
    for chunk in text.split(start)[1:]:
        out.append(chunk.split(end, 1)[0])
    return out


def moto_app() -> Any:
    """moto's S3 (and every other service it emulates) as a WSGI app, state in memory."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    return DomainDispatcherApplication(create_backend_app)


@contextlib.contextmanager
def moto_s3(folder: Path) -> Iterator[ObjectStore]:
    """moto's S3 server on a free port, HTTPS, one empty bucket; stopped on exit."""
    tls = TlsFiles(folder / "s3-tls")
    tls.create([HOST, "localhost"])
    folder.chmod(0o755)  # PostgreSQL's OS user runs pgBackRest and reads the CA
    tls.folder.chmod(0o755)
    (port,) = free_ports(1)
    log = (folder / "moto.log").open("wb")
    # moto's app under uvicorn rather than its own Werkzeug server: Werkzeug drops kept-alive
    # TLS connections without a close_notify, which pgBackRest reports as "unexpected eof".
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "tests.objectstore:moto_app",
         "--interface", "wsgi", "--host", HOST, "--port", str(port), "--log-level", "warning",
         "--ssl-certfile", str(tls.server_cert), "--ssl-keyfile", str(tls.server_key)],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
    )  # fmt: skip
    store = ObjectStore(
        endpoint=f"localhost:{port}",  # pgBackRest matches a name, not an IP address SAN
        bucket="leaderboard-backups",
        ca_file=tls.ca_cert,
        key="AKIA" + secrets.token_hex(8).upper(),
        key_secret=secrets.token_urlsafe(30),
    )
    try:

        def answers() -> bool:
            if server.poll() is not None:
                raise RuntimeError(f"moto_server exited: {(folder / 'moto.log').read_text()}")
            try:
                httpx.get(store.url, verify=store.tls_context(), timeout=1)
            except httpx.HTTPError:
                return False
            return True

        wait_until(answers, timeout=30, what="moto's S3 server answers over HTTPS")
        made = httpx.put(f"{store.url}/{store.bucket}", verify=store.tls_context(), timeout=10)
        made.raise_for_status()
        yield store
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
