"""Join tokens as swarm makes them: SWMTKN-1-<sha256 of the CA bundle in base36, 50 chars>-<secret, 25 chars>.
Pure; used by the CA server (manager/ca/server.py) and the joining node (shoal/swarm)."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass

PREFIX = "SWMTKN"
VERSION = "1"
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_TOKEN = re.compile(r"^SWMTKN-1-([0-9a-z]{50})-([0-9a-z]{25})$")

INVALID_TOKEN = "invalid join token"
NEEDS_VALID_TOKEN = "A valid join token is necessary to join this cluster"


def base36(n: int, width: int) -> str:
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(_DIGITS[r])
    return "".join(reversed(out)).rjust(width, "0")


def ca_digest_hex(ca_pem: bytes) -> str:
    """sha256 of the whole CA bundle, hex (what `swarm ca` and the mismatch message show)."""
    return hashlib.sha256(ca_pem).hexdigest()


def ca_digest_base36(ca_pem: bytes) -> str:
    return base36(int(ca_digest_hex(ca_pem), 16), 50)


def new_secret() -> str:
    return base36(int.from_bytes(os.urandom(16), "big"), 25)


def new_token(ca_pem: bytes) -> str:
    return f"{PREFIX}-{VERSION}-{ca_digest_base36(ca_pem)}-{new_secret()}"


@dataclass(slots=True, frozen=True)
class ParsedToken:
    digest_hex: str  # sha256 of the CA bundle the token was made for
    secret: str


def parse_token(token: str) -> ParsedToken:
    """ValueError(INVALID_TOKEN) for anything that is not a well-formed version 1 token."""
    m = _TOKEN.match(token)
    if m is None:
        raise ValueError(INVALID_TOKEN)
    n = int(m.group(1), 36)
    if n >= 1 << 256:
        raise ValueError(INVALID_TOKEN)
    return ParsedToken(f"{n:064x}", m.group(2))


def tokens_equal(a: str, b: str) -> bool:
    """Constant time, so the time a refusal takes tells nothing about how much of a token was right."""
    return hmac.compare_digest(a.encode(), b.encode())
