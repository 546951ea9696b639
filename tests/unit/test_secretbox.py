"""manager/secretbox.py: sealed secret data opens only with the same key and the same secret id."""

from __future__ import annotations

import pytest

from manager.secretbox import SecretBoxError, new_key, open_sealed, seal
from manager.store.validate import MAX_SECRET_SIZE, SECRET_SEAL_OVERHEAD, secret_data_error


def test_sealed_data_opens_with_the_same_key_and_id() -> None:
    key = new_key()
    assert open_sealed(key, "s1", seal(key, "s1", b"pw")) == b"pw"


def test_sealed_data_does_not_contain_the_plaintext_and_differs_each_time() -> None:
    key = new_key()
    a, b = seal(key, "s1", b"plaintext-here"), seal(key, "s1", b"plaintext-here")
    assert b"plaintext-here" not in a and a != b and len(a) == len(b"plaintext-here") + SECRET_SEAL_OVERHEAD


def test_sealed_data_moved_to_another_secret_id_does_not_open() -> None:
    key = new_key()
    with pytest.raises(SecretBoxError) as e:
        open_sealed(key, "s2", seal(key, "s1", b"pw"))
    assert str(e.value) == "secret s2: cannot open its data with this manager's secrets key"


def test_sealed_data_under_another_key_or_tampered_does_not_open() -> None:
    key = new_key()
    sealed = bytearray(seal(key, "s1", b"pw"))
    with pytest.raises(SecretBoxError):
        open_sealed(new_key(), "s1", bytes(sealed))
    sealed[-1] ^= 1
    with pytest.raises(SecretBoxError):
        open_sealed(key, "s1", bytes(sealed))


def test_garbage_is_refused_as_an_unknown_format() -> None:
    with pytest.raises(SecretBoxError) as e:
        open_sealed(new_key(), "s1", b"\x02short")
    assert str(e.value) == "secret s1: sealed data has an unknown format"


def test_secret_size_limits_are_swarms() -> None:
    msg = f"secret data must be larger than 0 and less than {MAX_SECRET_SIZE} bytes"
    assert (secret_data_error(0), secret_data_error(1), secret_data_error(MAX_SECRET_SIZE)) == (msg, None, msg)
