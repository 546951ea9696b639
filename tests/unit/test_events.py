"""shoal.engine.events: the ring, moby's filter rules, since/until parsing, the message shape."""
from __future__ import annotations

import pytest

from common.errdefs import InvalidParameter
from shoal.engine.events import (
    Event,
    EventLog,
    container_attributes,
    exec_action,
    matches,
    network_attributes,
    parse_timestamp,
    validate_filters,
)


def _clock(start: int = 1_700_000_000_000_000_000):
    now = [start]

    def tick() -> int:
        now[0] += 1000
        return now[0]
    return tick


def _container(action: str, cid: str = "a" * 64, name: str = "web", image: str = "busybox:latest",
               labels: dict | None = None, **extra) -> Event:
    return Event("container", action, cid, container_attributes(labels or {}, image, name, **extra), 1)


def test_container_event_json_has_the_deprecated_fields_moby_fills():
    event = Event("container", "die", "c" * 64, {"image": "busybox", "name": "x", "exitCode": "3"},
                  1_700_000_000_123_456_789)
    assert event.to_json() == {
        "status": "die", "id": "c" * 64, "from": "busybox",
        "Type": "container", "Action": "die",
        "Actor": {"ID": "c" * 64, "Attributes": {"image": "busybox", "name": "x", "exitCode": "3"}},
        "scope": "local", "time": 1_700_000_000, "timeNano": 1_700_000_000_123_456_789,
    }


def test_network_event_json_has_no_deprecated_fields():
    event = Event("network", "connect", "n" * 64, network_attributes("front", "bridge", "c" * 64), 5)
    out = event.to_json()
    assert "status" not in out and "id" not in out and "from" not in out
    assert out["Actor"]["Attributes"] == {"name": "front", "type": "bridge", "container": "c" * 64}


def test_container_attributes_image_and_name_win_over_labels():
    attrs = container_attributes({"name": "label-name", "tier": "db"}, "busybox", "real", exitCode=0)
    assert attrs == {"exitCode": "0", "name": "real", "tier": "db", "image": "busybox"}


def test_type_filter_is_exact():
    assert matches(_container("start"), {"type": ["container"]})
    assert not matches(_container("start"), {"type": ["network"]})


def test_event_filter_is_exact_except_for_exec_events():
    assert matches(_container("start"), {"event": ["start"]})
    assert not matches(_container("start"), {"event": ["sta"]})
    exec_start = _container(exec_action("exec_start", ["sh", "-c", "true"]))
    assert exec_start.action == "exec_start: sh -c true"
    assert exec_action("exec_create", ["true"]) == "exec_create: true "  # as dockerd 20.10 names it
    assert matches(exec_start, {"event": ["exec_start"]})
    assert not matches(exec_start, {"event": ["exec_create"]})


def test_container_filter_matches_id_prefix_or_name():
    event = _container("start", cid="abcdef" + "0" * 58, name="web")
    assert matches(event, {"container": ["abcdef"]})
    assert matches(event, {"container": ["web"]})
    assert not matches(event, {"container": ["db"]})


def test_container_filter_excludes_network_events_as_moby_does():
    event = Event("network", "connect", "n" * 64, network_attributes("front", "bridge", "c" * 64), 1)
    assert not matches(event, {"container": ["c" * 12]})


def test_network_filter_matches_network_name_and_leaves_out_container_events():
    event = Event("network", "create", "f00d" + "0" * 60, network_attributes("front", "bridge"), 1)
    assert matches(event, {"network": ["front"]})
    assert matches(event, {"network": ["f00d"]})
    assert not matches(_container("start"), {"network": ["front"]})


def test_image_filter_matches_container_image_with_or_without_tag():
    event = _container("start", image="busybox:latest")
    assert matches(event, {"image": ["busybox"]})
    assert matches(event, {"image": ["busybox:latest"]})
    assert not matches(event, {"image": ["alpine"]})


def test_image_filter_on_image_events_uses_the_name_attribute():
    event = Event("image", "tag", "sha256:" + "1" * 64, {"name": "mine:v1"}, 1)
    assert matches(event, {"image": ["mine"]})
    assert matches(event, {"image": ["sha256:" + "1" * 64]})


def test_label_filter_needs_every_label():
    event = _container("start", labels={"tier": "db", "team": "x"})
    assert matches(event, {"label": ["tier"]})
    assert matches(event, {"label": ["tier=db", "team=x"]})
    assert not matches(event, {"label": ["tier=web"]})
    assert not matches(event, {"label": ["tier=db", "zone"]})


def test_unknown_filter_is_refused_with_mobys_message():
    with pytest.raises(InvalidParameter, match=r"^invalid filter 'colour'$"):
        validate_filters({"colour": ["red"]})


def test_parse_timestamp_seconds_and_fraction():
    assert parse_timestamp("", "since") is None
    assert parse_timestamp("1700000000", "since") == 1_700_000_000_000_000_000
    assert parse_timestamp("1700000000.5", "since") == 1_700_000_000_500_000_000
    assert parse_timestamp("1700000000.000000001", "since") == 1_700_000_000_000_000_001


def test_parse_timestamp_refuses_text_with_gos_wording():
    with pytest.raises(InvalidParameter, match=r'^strconv.ParseInt: parsing "yesterday": invalid syntax$'):
        parse_timestamp("yesterday", "since")


def test_past_without_since_or_until_is_empty():
    log = EventLog(clock=_clock())
    log.emit("container", "start", "a" * 64, {"name": "x"})
    assert log.past(None, None, {}) == []


def test_past_returns_events_between_since_and_until_in_order():
    log = EventLog(clock=_clock())
    events = [log.emit("container", action, "a" * 64, {"name": "x"}) for action in ("create", "start", "die", "destroy")]
    got = log.past(events[1].time_nano, events[2].time_nano, {})
    assert [e.action for e in got] == ["start", "die"]


def test_ring_keeps_only_the_last_events():
    log = EventLog(clock=_clock(), size=3)
    for i in range(5):
        log.emit("container", f"a{i}", "a" * 64, {})
    assert [e.action for e in log.past(0, None, {})] == ["a2", "a3", "a4"]


def test_event_times_strictly_increase_even_when_the_clock_does_not():
    log = EventLog(clock=lambda: 42)
    first, second = log.emit("image", "tag", "i", {}), log.emit("image", "tag", "i", {})
    assert second.time_nano == first.time_nano + 1


def test_subscriber_gets_matching_events_only():
    log = EventLog(clock=_clock())
    sub = log.subscribe({"type": ["network"]})
    log.emit("container", "start", "a" * 64, {"name": "x"})
    log.emit("network", "create", "n" * 64, {"name": "front", "type": "bridge"})
    assert sub.queue.qsize() == 1
    assert sub.queue.get_nowait().action == "create"
    log.unsubscribe(sub)
    assert log.listeners == 0


def test_slow_subscriber_is_dropped_with_a_marker():
    from shoal.engine import events as mod

    log = EventLog(clock=_clock())
    sub = log.subscribe({})
    for _ in range(mod.SUBSCRIBER_QUEUE + 5):
        log.emit("image", "tag", "i", {})
    assert sub.dropped
    assert sub.queue.qsize() == mod.SUBSCRIBER_QUEUE + 1
