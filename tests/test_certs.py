"""The certificates the project generates survive a CA rotation: while the old and the renewed
CA (the same name) are both trusted, a certificate from the renewed one still verifies. Without
key identifiers OpenSSL may pick the old CA as the issuer and refuse it (the operator then saw
every member as down after a renewal)."""

from __future__ import annotations

import ssl
from pathlib import Path

from leaderboard.certs import Authority


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> None:
    """A TLS handshake in memory, server and client in turn until both are done."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for name, side in (("c", c), ("s", s)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("the handshake did not finish")


def test_a_renewed_certificate_verifies_while_both_cas_are_trusted(tmp_path: Path) -> None:
    old, new = Authority.create("leaderboard-ca"), Authority.create("leaderboard-ca")
    cert, key = new.issue("server", ["localhost", "127.0.0.1"])
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client = ssl.create_default_context(cadata=(old.cert_pem + new.cert_pem).decode())
    _handshake(server, client)  # raises SSLCertVerificationError if the old CA were picked
