"""The image commands' pure parts: sizes for `shoal daemon --max-image-size`."""
from __future__ import annotations

import pytest

from shoal.cli.image import parse_size


@pytest.mark.parametrize("text,expected", [
    ("1048576", 1 << 20),
    ("20g", 20 << 30),
    ("512MiB", 512 << 20),
    ("4m", 4 << 20),
    ("1.5k", 1536),
    ("2 GB", 2 << 30),
])
def test_size_with_binary_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text,message", [
    ("lots", "invalid size: 'lots' (expected bytes, or a number with k, m, g or t)"),
    ("-1g", "invalid size: '-1g' (expected bytes, or a number with k, m, g or t)"),
    ("0", "invalid size: '0' (must be more than 0)"),
])
def test_bad_size_is_refused_naming_it(text: str, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_size(text)
    assert str(refused.value) == message
