"""Seals secret data for the replicated store: AES-256-GCM under the managers' secrets key, which lives in each
manager's data dir (0600) and reaches a joining manager only in its mutual-TLS JoinRaft answer, never the raft log."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.fsutil import write_atomic

VERSION = b"\x01"
KEY_FILE = "secrets.key"


class SecretBoxError(Exception):
    pass


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def seal(key: bytes, secret_id: str, plaintext: bytes) -> bytes:
    """version || nonce || ciphertext+tag; the secret id is bound in as associated data, so a sealed blob
    copied onto another secret does not open."""
    nonce = os.urandom(12)
    return VERSION + nonce + AESGCM(key).encrypt(nonce, plaintext, secret_id.encode())


def open_sealed(key: bytes, secret_id: str, sealed: bytes) -> bytes:
    if len(sealed) < 1 + 12 + 16 or sealed[:1] != VERSION:
        raise SecretBoxError(f"secret {secret_id}: sealed data has an unknown format")
    try:
        return AESGCM(key).decrypt(sealed[1:13], sealed[13:], secret_id.encode())
    except InvalidTag:
        raise SecretBoxError(f"secret {secret_id}: cannot open its data with this manager's secrets key") from None


def load_key(directory: Path) -> bytes | None:
    try:
        key = (directory / KEY_FILE).read_bytes()
    except FileNotFoundError:
        return None
    if len(key) != 32:
        raise SecretBoxError(f"{directory / KEY_FILE}: a secrets key is 32 bytes, found {len(key)}")
    return key


def save_key(directory: Path, key: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(directory / KEY_FILE, key, mode=0o600)
