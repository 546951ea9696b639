"""Test support: static certificates for managers with mutual TLS (until the swarm CA exists).
Used by tests/lab/test_manager_cluster.py and test_manager_wire.py through LocalCluster(tls=...)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from manager.transport import TLSFiles


def make_pki(d: Path, members: list[int]) -> tuple[dict[int, TLSFiles], TLSFiles]:
    """A test CA, one certificate per manager as swarmkit lays them out (CN=<raft id>, OU=swarm-manager,
    SAN shoal-manager and 127.0.0.<id>), and a client certificate (OU=swarm-worker)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shoal test root CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = d / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def leaf(name: str, cn: str, ou: str, ip: str | None) -> TLSFiles:
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName("shoal-manager")]
        if ip:
            sans.append(x509.IPAddress(ipaddress.ip_address(ip)))
        cert = (
            x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        (d / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (d / f"{name}.key").write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        return TLSFiles(ca_path, d / f"{name}.pem", d / f"{name}.key")

    return {i: leaf(f"m{i}", str(i), "swarm-manager", f"127.0.0.{i}") for i in members}, leaf("client", "client", "swarm-worker", None)
