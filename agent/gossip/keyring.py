"""The gossip keyring: AES-GCM sealing of every gossip packet and push-pull frame, up to three keys for rotation.
Used by agent.gossip.shell; the keys come from the managers through the dispatcher session (the netdb glue)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.errdefs import InvalidParameter

FRAME_VERSION = 1
MAX_KEYS = 3
NONCE = 12
TAG = 16
HEADER = 2                    # version byte, key label byte (both authenticated as associated data)
OVERHEAD = HEADER + NONCE + TAG


class OpenError(ValueError):
    """A frame we cannot open; reason is one of truncated, version, unknown_key, bad_tag (the drop counters)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def key_label(key: bytes) -> int:
    """A byte naming the key on the wire (a hint to try it first; all keys are tried)."""
    return hashlib.sha256(b"shoal-gossip-key" + key).digest()[0]


@dataclass(slots=True)
class _Key:
    key: bytes
    label: int
    aead: AESGCM


class Keyring:
    """Seals with the primary key; opens with whichever of the (at most three) keys authenticates the frame."""

    def __init__(self, keys: list[bytes], primary: bytes | None = None) -> None:
        self._keys: list[_Key] = []
        self._primary: _Key | None = None
        self.set_keys(keys, primary)

    def set_keys(self, keys: list[bytes], primary: bytes | None = None) -> None:
        if not keys:
            raise InvalidParameter("gossip keyring needs at least one key")
        if len(keys) > MAX_KEYS:
            raise InvalidParameter(f"gossip keyring holds at most {MAX_KEYS} keys, not {len(keys)}")
        for k in keys:
            if len(k) not in (16, 24, 32):
                raise InvalidParameter(f"gossip key must be 16, 24 or 32 bytes, not {len(k)}")
        primary = keys[0] if primary is None else primary
        if primary not in keys:
            raise InvalidParameter("gossip primary key is not in the keyring")
        built = [_Key(k, key_label(k), AESGCM(k)) for k in dict.fromkeys(keys)]
        self._keys = built
        self._primary = next(k for k in built if k.key == primary)

    @property
    def keys(self) -> list[bytes]:
        return [k.key for k in self._keys]

    @property
    def primary(self) -> bytes:
        assert self._primary is not None
        return self._primary.key

    def seal(self, plaintext: bytes) -> bytes:
        k = self._primary
        assert k is not None
        header = bytes([FRAME_VERSION, k.label])
        nonce = os.urandom(NONCE)
        return header + nonce + k.aead.encrypt(nonce, plaintext, header)

    def open(self, frame: bytes) -> bytes:
        if len(frame) < OVERHEAD:
            raise OpenError("truncated")
        if frame[0] != FRAME_VERSION:
            raise OpenError("version")
        header, nonce, body = frame[:HEADER], frame[HEADER:HEADER + NONCE], frame[HEADER + NONCE:]
        label = frame[1]
        # the labelled key first, then the others: a label collision or a relabelled frame still opens
        keys = self._keys
        if keys[0].label != label:
            keys = [k for k in keys if k.label == label] + [k for k in keys if k.label != label]
        for k in keys:
            try:
                return k.aead.decrypt(nonce, body, header)
            except InvalidTag:
                continue
        raise OpenError("bad_tag" if any(k.label == label for k in self._keys) else "unknown_key")
