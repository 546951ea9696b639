"""shoal.engine.verbs: the pure parts of prune (the `until` filter, label filters)."""
from __future__ import annotations

import pytest

from common.errdefs import InvalidParameter
from shoal.engine.verbs import _passes, _prune_filters, parse_until


def test_until_as_a_duration_before_now():
    assert parse_until("24h", 100_000.0) == 100_000.0 - 86_400
    assert parse_until("1h30m", 10_000.0) == 10_000.0 - 5_400


def test_until_as_unix_seconds_or_a_date():
    assert parse_until("1700000000", 0) == 1_700_000_000.0
    assert parse_until("2024-01-01T00:00:00Z", 0) == 1_704_067_200.0
    assert parse_until("2024-01-01", 0) == 1_704_067_200.0


def test_until_that_is_neither_is_refused_naming_it():
    with pytest.raises(InvalidParameter, match=r'^failed to parse value as time or duration: "soon"$'):
        parse_until("soon", 0)


def test_prune_filters_accept_until_and_labels_only():
    assert _prune_filters({"label": ["a=b"], "label!": ["c"]}) == (None, ["a=b"], ["c"])
    with pytest.raises(InvalidParameter, match=r"^invalid filter 'name'$"):
        _prune_filters({"name": ["x"]})
    with pytest.raises(InvalidParameter, match=r"^more than one until filter specified$"):
        _prune_filters({"until": ["1h", "2h"]})


def test_passes_applies_until_label_and_not_label():
    labels = {"tier": "db"}
    assert _passes(labels, 100.0, None, ["tier=db"], [])
    assert not _passes(labels, 100.0, 50.0, [], [])  # created after until
    assert _passes(labels, 10.0, 50.0, [], [])
    assert not _passes(labels, 10.0, None, ["tier=web"], [])
    assert not _passes(labels, 10.0, None, [], ["tier"])
