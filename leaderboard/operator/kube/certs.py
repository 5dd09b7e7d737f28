"""Certificates renewed in place: when the Secret named by ``spec.tls.secretName`` changes
(cert-manager renewed it, or the chart's was replaced), the kubelet rewrites the files in
every member pod within a minute or so, and PostgreSQL serves the new certificate once it
reloads its configuration: the operator reloads each member as soon as its file matches the
Secret, with no restart and no dropped session."""

from __future__ import annotations

import base64
import ssl
import time
from typing import Any

import asyncpg
from lightkube.resources.core_v1 import Secret

from leaderboard.operator.kube.publish import Publish
from leaderboard.operator.kube.shell import log
from leaderboard.operator.state import Member

CHECK_EVERY_S = 5.0  # a GET of the Secret; the kubelet's own sync takes up to a minute


class Certs(Publish):
    async def _reload_renewed_certificates(self, cr: Any, members: list[Member]) -> None:
        if self._tls_secret is None or time.monotonic() - self._certs_checked_at < CHECK_EVERY_S:
            return
        self._certs_checked_at = time.monotonic()
        secret = await self.client.get(Secret, self._tls_secret, namespace=self.namespace)
        data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
        self._trust(data.get("ca.crt", ""))
        certificate = data.get("tls.crt")
        if not certificate:
            return
        for member in members:
            if not member.reachable or self._reloaded.get(member.name) == certificate:
                continue
            try:
                rows = await self._sql(
                    member.name, "SELECT pg_read_file(current_setting('ssl_cert_file'))"
                )
                if rows[0][0] != certificate:
                    continue  # the kubelet has not written it yet: next time
                await self._sql(member.name, "SELECT pg_reload_conf()")
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:  # busy or gone: next time
                log.warning("%s: certificate reload of %s: %r", self.key, member.name, exc)
                continue
            renewed = member.name in self._reloaded
            self._reloaded[member.name] = certificate
            if renewed:
                await self._event(
                    cr, "CertificateReloaded",
                    f"{member.name} serves the renewed certificate of {self._tls_secret}",
                    warning=False,
                )  # fmt: skip

    def _trust(self, ca: str) -> None:
        """Verify members against the new CA and the one before it: until each member has
        reloaded, some still present a certificate the previous CA signed."""
        if not ca or (self._cas and self._cas[-1] == ca):
            return
        self._cas = (*self._cas[-1:], ca)
        context = ssl.create_default_context(cadata="\n".join(self._cas))
        context.check_hostname = False  # as in Shell._load_tls: pod addresses, the CA checked
        self._tls = context
