"""The CA's pure parts (manager/ca/certs.py, tokens.py, server.role_for_token): certificate layout, join token
format and checks, renewal timing."""

from __future__ import annotations

import datetime
import random

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from common.errdefs import InvalidParameter
from manager.ca import certs, tokens
from manager.ca.server import role_for_token
from proto import objects_pb2 as pb


@pytest.fixture(scope="module")
def root() -> certs.RootCA:
    return certs.create_root_ca()


def test_root_ca_is_a_p256_ca_certificate(root: certs.RootCA) -> None:
    cert = root.cert()
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "swarm-ca"


def test_node_certificate_names_node_role_and_cluster(root: certs.RootCA) -> None:
    pem = certs.sign_csr(root, certs.make_csr(certs.new_key_pem()), "node1", certs.WORKER_OU, "cluster1")
    who = certs.identity(pem)
    assert (who.node_id, who.role_ou, who.cluster_id) == ("node1", "swarm-worker", "cluster1")
    assert who.not_after - who.not_before == certs.DEFAULT_NODE_CERT_EXPIRY + certs.BACKDATE
    certs.verify_issued_by(root, pem)


def test_the_identity_of_a_certificate_is_parsed_once_and_another_certificate_gets_its_own(root: certs.RootCA) -> None:
    one = certs.sign_csr(root, certs.make_csr(certs.new_key_pem()), "node1", certs.WORKER_OU, "cluster1")
    other = certs.sign_csr(root, certs.make_csr(certs.new_key_pem()), "node2", certs.MANAGER_OU, "cluster1")
    assert certs.identity(one) is certs.identity(bytes(one))
    assert (certs.identity(other).node_id, certs.identity(other).role_ou) == ("node2", certs.MANAGER_OU)


def test_a_certificate_naming_no_node_is_refused_every_time(root: certs.RootCA) -> None:
    key = certs.new_key_pem()
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    private = load_pem_private_key(key, None)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "no-ou")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(private, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    for _ in range(2):
        with pytest.raises(certs.CertificateError, match="is not a node certificate"):
            certs.identity(pem)


def test_a_certificate_from_another_ca_is_not_accepted(root: certs.RootCA) -> None:
    other = certs.create_root_ca()
    pem = certs.sign_csr(other, certs.make_csr(certs.new_key_pem()), "n", certs.MANAGER_OU, "c")
    with pytest.raises(certs.CertificateError):
        certs.verify_issued_by(root, pem)


def test_a_non_p256_or_garbage_csr_is_refused(root: certs.RootCA) -> None:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    k = ec.generate_private_key(ec.SECP384R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(k, hashes.SHA256())
    with pytest.raises(certs.CertificateError, match="ECDSA P-256"):
        certs.sign_csr(root, csr.public_bytes(serialization.Encoding.PEM), "n", certs.WORKER_OU, "c")
    with pytest.raises(certs.CertificateError, match="invalid certificate signing request"):
        certs.sign_csr(root, b"not a csr", "n", certs.WORKER_OU, "c")


def test_renewal_falls_between_half_and_four_fifths_of_the_lifetime() -> None:
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    end = start + datetime.timedelta(days=90)
    rng = random.Random(7)
    delays = [certs.renewal_delay(start, end, start, rng) for _ in range(200)]
    life = (end - start).total_seconds()
    assert all(0.5 * life <= d <= 0.8 * life for d in delays)
    assert max(delays) - min(delays) > 0.2 * life  # spread, so nodes do not renew together
    assert certs.renewal_delay(start, end, end, rng) == 0.0


def test_join_token_has_swarms_layout(root: certs.RootCA) -> None:
    t = tokens.new_token(root.cert_pem)
    prefix, version, digest, secret = t.split("-")
    assert (prefix, version, len(digest), len(secret)) == ("SWMTKN", "1", 50, 25)
    assert int(digest, 36) == int(tokens.ca_digest_hex(root.cert_pem), 16)
    assert tokens.parse_token(t).digest_hex == tokens.ca_digest_hex(root.cert_pem)


def test_base36_pads_with_zeros_to_the_width() -> None:
    assert tokens.base36(35, 4) == "000z"
    assert tokens.base36(0, 3) == "000"


@pytest.mark.parametrize("bad", ["", "SWMTKN-1-x-y", "SWMTKN-2-" + "a" * 50 + "-" + "b" * 25,
                                 "SWMTKN-1-" + "A" * 50 + "-" + "b" * 25, "SWMTKN-1-" + "z" * 50 + "-" + "b" * 25])
def test_malformed_tokens_do_not_parse(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid join token"):
        tokens.parse_token(bad)


def test_role_for_token_checks_both_tokens(root: certs.RootCA) -> None:
    c = pb.Cluster(id="c")
    c.root_ca.join_tokens.worker = tokens.new_token(root.cert_pem)
    c.root_ca.join_tokens.manager = tokens.new_token(root.cert_pem)
    assert role_for_token(c, c.root_ca.join_tokens.worker) == pb.NodeSpec.WORKER
    assert role_for_token(c, c.root_ca.join_tokens.manager) == pb.NodeSpec.MANAGER
    for token, message in [("", tokens.NEEDS_VALID_TOKEN), ("garbage", tokens.INVALID_TOKEN),
                           (tokens.new_token(root.cert_pem), tokens.NEEDS_VALID_TOKEN)]:
        with pytest.raises(InvalidParameter) as e:
            role_for_token(c, token)
        assert e.value.message == message


def test_a_node_may_register_three_times_per_period() -> None:
    from manager.dispatcher import RegistrationLimiter

    now = [100.0]
    lim = RegistrationLimiter(lambda: now[0], period=8.0, count=3)
    assert [lim.check("n1") for _ in range(3)] == [None, None, None]
    assert lim.check("n1") == "node n1 exceeded rate limit count of registrations"
    assert lim.check("n2") is None  # per node
    now[0] += 8.5
    assert lim.check("n1") is None


def _who(node_id: str, ou: str) -> certs.NodeIdentity:
    import datetime
    now = datetime.datetime.now(datetime.timezone.utc)
    return certs.NodeIdentity(node_id, ou, "cluster1", now, now, 1)


def test_a_manager_forwarding_for_a_caller_is_authorized_as_that_caller() -> None:
    from manager.ca.auth import effective_identity, forwarded_for

    who = effective_identity(_who("m1", certs.MANAGER_OU), forwarded_for(_who("w9", certs.WORKER_OU)))
    assert (who.node_id, who.role_ou, who.cluster_id) == ("w9", certs.WORKER_OU, "cluster1")


def test_a_worker_claiming_to_forward_stays_itself() -> None:
    from manager.ca.auth import effective_identity, forwarded_for

    who = effective_identity(_who("w1", certs.WORKER_OU), forwarded_for(_who("m1", certs.MANAGER_OU)))
    assert (who.node_id, who.role_ou) == ("w1", certs.WORKER_OU)


def test_a_malformed_forwarding_claim_is_ignored() -> None:
    from manager.ca.auth import FORWARDED_FOR, effective_identity

    for claim in ("", "a;b", "a;;c", "x" * 300 + ";b;c"):
        assert effective_identity(_who("m1", certs.MANAGER_OU), ((FORWARDED_FOR, claim),)).node_id == "m1"


class _LaggingStore:
    """A follower's view of the node table: `held` now, `after_catch_up` once a linearizable read has
    brought it up to the leader's commit index (None: no leader answered)."""

    def __init__(self, held: set[str], after_catch_up: set[str] | None) -> None:
        self.held = set(held)
        self.after_catch_up = after_catch_up
        self.catch_ups = 0

    def exists(self, node_id: str) -> bool:
        return node_id in self.held

    async def catch_up(self) -> bool:
        self.catch_ups += 1
        if self.after_catch_up is None:
            return False
        self.held = set(self.after_catch_up)
        return True


def _refusal(store: _LaggingStore, callers: list[tuple[certs.NodeIdentity, bool]]) -> str | None:
    import asyncio

    from manager.ca.auth import Authorizer

    return asyncio.run(Authorizer(lambda: "cluster1", store.exists, store.catch_up).refusal(callers))


def test_a_node_the_follower_has_not_applied_yet_is_accepted_after_catching_up() -> None:
    store = _LaggingStore({"m1"}, after_catch_up={"m1", "m3"})
    assert _refusal(store, [(_who("m3", certs.MANAGER_OU), True)]) is None
    assert store.catch_ups == 1


def test_a_node_still_absent_after_catching_up_is_refused_as_removed() -> None:
    store = _LaggingStore({"m1"}, after_catch_up={"m1"})
    assert _refusal(store, [(_who("w7", certs.WORKER_OU), False)]) == \
        "Permission denied: node w7 is not a member of this cluster (it was removed)"


def test_an_unknown_node_is_refused_when_no_leader_confirms_the_store() -> None:
    store = _LaggingStore({"m1"}, after_catch_up=None)
    assert _refusal(store, [(_who("w7", certs.WORKER_OU), False)]) == \
        "Permission denied: node w7 is not a member of this cluster (it was removed)"


def test_a_known_member_is_checked_without_a_linearizable_read() -> None:
    store = _LaggingStore({"w1"}, after_catch_up={"w1"})
    assert _refusal(store, [(_who("w1", certs.WORKER_OU), True)]) == certs_unauthorized_role()
    assert _refusal(store, [(_who("w1", certs.WORKER_OU), False)]) is None
    assert store.catch_ups == 0


def certs_unauthorized_role() -> str:
    from manager.ca.auth import UNAUTHORIZED_ROLE

    return UNAUTHORIZED_ROLE
