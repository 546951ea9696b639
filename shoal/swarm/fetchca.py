"""A joining node's first contact: read the root CA a manager sends in its TLS handshake (not trusted yet), and keep
it only if its digest is the one the join token names (swarmkit's GetRemoteCA). Used by shoal/swarm/node.py."""

from __future__ import annotations

import socket
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from common.errdefs import InvalidParameter, SystemError_, Unavailable
from manager.ca import tokens


def parse_remote(addr: str, default_port: int = 2377) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or "]" in port:
        return addr.strip("[]"), default_port
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise InvalidParameter(f"invalid remote address {addr!r}") from None


def handshake_chain(host: str, port: int, timeout: float = 5.0) -> list[bytes]:
    """DER certificates the server sent (leaf first), without verifying them: we have no trust anchor yet."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=None) as tls:
            chain = tls._sslobj.get_unverified_chain()  # type: ignore[union-attr]  # CPython ≥3.10 (public in 3.13)
            return [c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain or []]  # type: ignore[attr-defined]


def remote_root_ca(addr: str, token: str, shown: str = "") -> bytes:
    """The root CA PEM of the manager at addr, checked against the token's digest (`shown`: the address the
    user gave, for messages)."""
    parsed = tokens.parse_token(token)  # ValueError(invalid join token): the caller checked already
    host, port = parse_remote(addr)
    try:
        chain = handshake_chain(host, port)
    except OSError as e:
        raise Unavailable(f"could not connect to the manager at {shown or addr}: {e}") from None
    if not chain:
        raise SystemError_(f"the manager at {addr} sent no certificate")
    root = x509.load_der_x509_certificate(chain[-1])
    pem = root.public_bytes(serialization.Encoding.PEM)
    if tokens.ca_digest_hex(pem) != parsed.digest_hex:
        raise SystemError_(f"remote CA does not match fingerprint. Expected: {parsed.digest_hex}")
    return pem
