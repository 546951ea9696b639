"""Root CA and node certificates as swarmkit lays them out: ECDSA P-256, CN=<node id>, OU=swarm-manager|swarm-worker,
O=<cluster id>, 90 days by default, renewed at a random point in 50–80% of the lifetime. Pure (no I/O)."""

from __future__ import annotations

import datetime
import functools
import random
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

MANAGER_OU = "swarm-manager"
WORKER_OU = "swarm-worker"
ROOT_CN = "swarm-ca"
TLS_SERVER_NAME = "shoal-manager"  # manager.transport.TLS_SERVER_NAME: every node cert carries it
DEFAULT_NODE_CERT_EXPIRY = datetime.timedelta(days=90)
ROOT_EXPIRY = datetime.timedelta(days=20 * 365)  # swarmkit's RootCAExpiration
BACKDATE = datetime.timedelta(minutes=5)  # clock skew between nodes (swarmkit backdates too); at most 10% of a lifetime


class CertificateError(ValueError):
    """A CSR or certificate that cannot be used."""


@dataclass(slots=True, frozen=True)
class RootCA:
    cert_pem: bytes
    key_pem: bytes

    def key(self) -> ec.EllipticCurvePrivateKey:
        k = serialization.load_pem_private_key(self.key_pem, None)
        assert isinstance(k, ec.EllipticCurvePrivateKey)
        return k

    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


@dataclass(slots=True, frozen=True)
class NodeIdentity:
    node_id: str
    role_ou: str
    cluster_id: str
    not_after: datetime.datetime
    not_before: datetime.datetime
    serial: int

    @property
    def is_manager(self) -> bool:
        return self.role_ou == MANAGER_OU


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def new_key_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def create_root_ca(now: datetime.datetime | None = None) -> RootCA:
    now = now or _now()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ROOT_CN)])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + ROOT_EXPIRY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return RootCA(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


def make_csr(key_pem: bytes) -> bytes:
    """A CSR for key_pem; the CA ignores its subject (it names the node itself), as swarmkit does."""
    key = serialization.load_pem_private_key(key_pem, None)
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())  # type: ignore[arg-type]
    return csr.public_bytes(serialization.Encoding.PEM)


def sign_csr(root: RootCA, csr_pem: bytes, node_id: str, role_ou: str, cluster_id: str,
             expiry: datetime.timedelta = DEFAULT_NODE_CERT_EXPIRY, now: datetime.datetime | None = None) -> bytes:
    """The node certificate for csr_pem's key (PEM)."""
    if role_ou not in (MANAGER_OU, WORKER_OU):
        raise CertificateError(f"invalid role {role_ou!r}")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as e:
        raise CertificateError(f"invalid certificate signing request: {e}") from None
    if not csr.is_signature_valid:
        raise CertificateError("invalid certificate signing request: bad signature")
    pub = csr.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != "secp256r1":
        raise CertificateError("invalid certificate signing request: the key must be ECDSA P-256")
    now = now or _now()
    backdate = min(BACKDATE, expiry / 10)  # a short test expiry must not be mostly backdating
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_id),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role_ou),
        x509.NameAttribute(NameOID.COMMON_NAME, node_id),
    ])
    sans = [x509.DNSName(role_ou), x509.DNSName(node_id), x509.DNSName(TLS_SERVER_NAME)]
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(root.cert().subject).public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - backdate).not_valid_after(now + expiry)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                              x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(root.key(), hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@functools.lru_cache(maxsize=256)
def identity(cert_pem: bytes) -> NodeIdentity:
    """What a node certificate says: CN node id, OU role, O cluster id (CertificateError if it says none).
    Cached by the certificate's bytes (a NodeIdentity is immutable): every RPC on the manager port asks it of the
    caller's certificate, and parsing one costs ~0.3 ms; a certificate that says none is parsed again each time."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as e:
        raise CertificateError(f"unreadable certificate: {e}") from None

    def one(oid: x509.ObjectIdentifier) -> str:
        vals = [a.value for a in cert.subject.get_attributes_for_oid(oid)]
        if len(vals) != 1 or not isinstance(vals[0], str) or not vals[0]:
            raise CertificateError(f"certificate {cert.subject.rfc4514_string()} is not a node certificate")
        return vals[0]

    return NodeIdentity(one(NameOID.COMMON_NAME), one(NameOID.ORGANIZATIONAL_UNIT_NAME), one(NameOID.ORGANIZATION_NAME),
                        cert.not_valid_after_utc, cert.not_valid_before_utc, cert.serial_number)


def verify_issued_by(root: RootCA, cert_pem: bytes) -> None:
    """CertificateError unless root signed cert_pem (the joiner checks what the CA sent back)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        cert.verify_directly_issued_by(root.cert())
    except (ValueError, TypeError) as e:
        raise CertificateError(f"certificate not issued by the cluster's root CA: {e}") from None
    except Exception as e:  # cryptography's InvalidSignature
        raise CertificateError(f"certificate not issued by the cluster's root CA: {type(e).__name__}") from None


def renewal_delay(not_before: datetime.datetime, not_after: datetime.datetime, now: datetime.datetime,
                  rng: random.Random | None = None) -> float:
    """Seconds from now until renewal: a random point between 50% and 80% of the lifetime (swarmkit's
    calculateRandomExpiry), so a cluster's nodes do not all renew at once; 0 when already past it."""
    rng = rng or random.Random()
    life = (not_after - not_before).total_seconds()
    at = not_before + datetime.timedelta(seconds=life * rng.uniform(0.5, 0.8))
    return max(0.0, (at - now).total_seconds())
