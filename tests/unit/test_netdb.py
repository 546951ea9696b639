"""networkdb (agent/gossip/netdb.py) over an in-memory stand-in for the gossip core (tests/unit/netdb_fake.py):
convergence, Lamport clocks, tombstones, network scoping, partitions, flaps, restarts, dead-node reaping."""

from __future__ import annotations

import random
import zlib

import pytest

from agent.gossip import netdb_wire as w
from agent.gossip.delegate import MemberState
from agent.gossip.netdb import CREATE, DELETE, UPDATE, NetDBConfig, NetworkDB
from common.errdefs import Conflict, InvalidParameter, NotFound
from tests.unit.netdb_fake import FakeCluster, member

N = "net1"


def cluster(names: list[str], nets: dict[str, list[str]] | None = None, seed: int = 1,
            config: NetDBConfig | None = None) -> FakeCluster:
    c = FakeCluster(seed, config)
    for n in names:
        c.add(n)
    for n in names:
        for nid in (nets or {}).get(n, [N]):
            c.dbs[n].join_network(nid)
    c.run(1.0)
    return c


def test_entry_created_on_one_node_reaches_every_member_of_the_network() -> None:
    c = cluster(["a", "b", "c", "d", "e"])
    c.dbs["a"].create_entry("t", N, "ep1", b"10.0.9.2")
    c.dbs["c"].create_entry("t", N, "ep2", b"10.0.9.3")
    c.run(2.0)
    for n in c.dbs:
        assert c.view(n, "t", N) == {"ep1": b"10.0.9.2", "ep2": b"10.0.9.3"}
        assert c.watched(n, N) == {"ep1": b"10.0.9.2", "ep2": b"10.0.9.3"}


def test_update_and_delete_reach_every_member_and_watchers_see_create_update_delete() -> None:
    c = cluster(["a", "b", "c"])
    c.dbs["a"].create_entry("t", N, "ep1", b"v1")
    c.run(1.0)
    c.dbs["a"].update_entry("t", N, "ep1", b"v2")
    c.run(1.0)
    assert [c.view(n, "t", N) for n in "abc"] == [{"ep1": b"v2"}] * 3
    c.dbs["a"].delete_entry("t", N, "ep1")
    c.run(1.0)
    assert [c.view(n, "t", N) for n in "abc"] == [{}] * 3
    assert [(ev, k, v) for ev, _w, k, v in c.events["b"]] == [(CREATE, "ep1", b"v1"), (UPDATE, "ep1", b"v2"), (DELETE, "ep1", b"v2")]


def test_a_node_joining_a_network_gets_its_entries_by_bulk_sync() -> None:
    c = cluster(["a", "b", "c"], nets={"a": [N], "b": [N], "c": []})
    for i in range(200):  # more than one packet: the sync comes in parts
        c.dbs["a"].create_entry("t", N, f"ep{i:03d}", b"x" * 40)
    c.run(2.0)
    c.dbs["c"].join_network(N)
    c.run(0.4)
    assert len(c.view("c", "t", N)) == 200
    assert c.watched("c", N) == c.view("a", "t", N)


def test_an_event_with_an_old_clock_is_dropped() -> None:
    c = cluster(["a", "b"])
    c.dbs["a"].create_entry("t", N, "ep1", b"first")
    c.dbs["a"].update_entry("t", N, "ep1", b"new")
    c.run(1.0)
    lt = c.dbs["b"].entries[N][("t", "ep1")].ltime
    old = w.TableEvents(from_node="a", events=[w.TableEvent(type=w.TableEvent.UPDATE, ltime=lt - 1, node_name="a",
                                                            network_id=N, table_name="t", key="ep1", value=b"old")])
    same = w.TableEvents(from_node="a", events=[w.TableEvent(type=w.TableEvent.UPDATE, ltime=lt, node_name="a",
                                                             network_id=N, table_name="t", key="ep1", value=b"same")])
    before = c.dbs["b"].counters["old"]
    c.dbs["b"].notify_msg(w.encode(old))
    c.dbs["b"].notify_msg(w.encode(same))
    assert c.dbs["b"].get_entry("t", N, "ep1") == b"new"
    assert c.dbs["b"].counters["old"] == before + 2


def test_a_network_event_with_an_old_clock_is_dropped() -> None:
    c = cluster(["a", "b"])
    lt = c.dbs["b"].attachments["a"][N].ltime
    leave = w.NetworkEvent(type=w.NetworkEvent.LEAVE, ltime=lt - 1 if lt > 1 else lt, node_name="a", network_id=N)
    c.dbs["b"].notify_msg(w.encode(leave))
    assert c.dbs["b"].peers(N) == ["a"]


def test_a_deleted_entry_stays_a_tombstone_that_refuses_older_events_until_reaped() -> None:
    cfg = NetDBConfig(reap_entry_s=10.0)
    c = cluster(["a", "b"], config=cfg)
    c.dbs["a"].create_entry("t", N, "ep1", b"v")
    c.run(1.0)
    create_lt = c.dbs["b"].entries[N][("t", "ep1")].ltime
    c.dbs["a"].delete_entry("t", N, "ep1")
    c.run(1.0)
    tomb = c.dbs["b"].entries[N][("t", "ep1")]
    assert tomb.deleting is True
    late = w.TableEvents(from_node="a", events=[w.TableEvent(type=w.TableEvent.CREATE, ltime=create_lt, node_name="a",
                                                             network_id=N, table_name="t", key="ep1", value=b"v")])
    c.dbs["b"].notify_msg(w.encode(late))  # the create arriving late does not bring the entry back
    with pytest.raises(NotFound) as e:
        c.dbs["b"].get_entry("t", N, "ep1")
    assert str(e.value) == "could not get entry in table t with network id net1 and key ep1"
    c.run(10.0)
    assert ("t", "ep1") not in c.dbs["b"].entries[N]
    assert ("t", "ep1") not in c.dbs["a"].entries[N]


def test_only_the_nodes_on_a_network_receive_its_table_events() -> None:
    c = cluster(["a", "b", "c", "d"], nets={"a": [N], "b": [N], "c": [N, "other"], "d": ["other"]})
    c.dbs["a"].create_entry("t", N, "ep1", b"v")
    c.dbs["c"].create_entry("t", "other", "ep9", b"w")
    c.run(3.0)
    assert c.view("c", "t", N) == {"ep1": b"v"}
    assert "ep1" not in str(c.dbs["d"].entries)
    for src, dst, data in c.delivered:
        m = w.decode_message(data)
        kind = m.WhichOneof("body")
        if dst == "d" and kind == "table_events":
            assert all(e.network_id == "other" for e in m.table_events.events)
        if dst == "d" and kind == "bulk_sync":
            assert m.bulk_sync.network_id == "other"
    assert c.view("d", "t", "other") == {"ep9": b"w"}


def test_a_partition_heals_with_no_stale_entry_on_either_side() -> None:
    c = cluster(["a", "b", "c", "d"])
    for n in "abcd":
        c.dbs[n].create_entry("t", N, f"{n}-keep", b"1")
        c.dbs[n].create_entry("t", N, f"{n}-gone", b"1")
        c.dbs[n].create_entry("t", N, f"{n}-changed", b"1")
    c.run(2.0)
    c.partition(["a", "b"], ["c", "d"])
    for n in "ad":
        c.dbs[n].delete_entry("t", N, f"{n}-gone")
        c.dbs[n].update_entry("t", N, f"{n}-changed", b"2")
        c.dbs[n].create_entry("t", N, f"{n}-new", b"3")
    c.run(3.0)
    assert c.view("b", "t", N)["d-gone"] == b"1"  # the other side's entries are kept (suspended) meanwhile
    assert c.dbs["b"].walk("t", N)[[e.key for e in c.dbs["b"].walk("t", N)].index("d-gone")].suspended
    c.heal()
    c.run(3.0)
    want = {f"{n}-keep": b"1" for n in "abcd"} | {"b-gone": b"1", "c-gone": b"1", "b-changed": b"1", "c-changed": b"1",
                                                  "a-changed": b"2", "d-changed": b"2", "a-new": b"3", "d-new": b"3"}
    for n in "abcd":
        assert c.view(n, "t", N) == want, n
        assert c.watched(n, N) == want, n
        assert not any(e.suspended for e in c.dbs[n].walk("t", N))


def test_a_flap_keeps_the_entries_without_a_delete_and_resyncs_when_the_node_is_back() -> None:
    c = cluster(["a", "b", "c"])
    c.dbs["c"].create_entry("t", N, "ep-c", b"1")
    c.run(1.0)
    events_before = list(c.events["a"])
    c.partition(["c"], ["a", "b"])  # c declared dead by a and b, alive all along
    c.run(2.0)
    assert c.view("a", "t", N) == {"ep-c": b"1"}
    c.heal()
    c.run(2.0)
    assert c.view("a", "t", N) == {"ep-c": b"1"}
    assert c.events["a"] == events_before  # no delete, no re-create: the overlay and DNS never saw a gap
    assert not any(e.suspended for e in c.dbs["a"].walk("t", N))


def test_a_restarted_node_replaces_its_old_entries_and_leaves_none_stale() -> None:
    c = cluster(["a", "b", "c"])
    c.dbs["c"].create_entry("t", N, "ep-old1", b"1")
    c.dbs["c"].create_entry("t", N, "ep-old2", b"1")
    c.dbs["c"].create_entry("t", N, "ep-kept", b"1")
    c.run(1.0)
    c.kill("c")  # kill -9: its state is gone
    c.run(2.0)
    assert set(c.view("a", "t", N)) == {"ep-old1", "ep-old2", "ep-kept"}
    db = c.add("c")
    db.join_network(N)
    db.create_entry("t", N, "ep-kept", b"2")  # its container survived: the agent re-creates the entry
    db.create_entry("t", N, "ep-new", b"3")
    c.run(3.0)
    for n in "abc":
        assert c.view(n, "t", N) == {"ep-kept": b"2", "ep-new": b"3"}, n
    for n in "ab":
        assert c.watched(n, N) == {"ep-kept": b"2", "ep-new": b"3"}, n


def test_a_node_restarted_before_it_was_declared_dead_leaves_no_stale_entry() -> None:
    c = cluster(["a", "b", "c"])
    c.dbs["c"].create_entry("t", N, "ep-old", b"1")
    c.run(1.0)
    del c.dbs["c"]  # restarted within the failure detection time: nobody saw it dead
    db = c.add("c")
    db.join_network(N)
    db.create_entry("t", N, "ep-new", b"2")
    c.run(3.0)
    for n in "abc":
        assert c.view(n, "t", N) == {"ep-new": b"2"}, n
    assert c.watched("a", N) == {"ep-new": b"2"}


def test_a_node_dead_longer_than_the_reap_interval_has_its_entries_deleted() -> None:
    c = cluster(["a", "b", "c"], config=NetDBConfig(dead_node_reap_s=5.0))
    c.dbs["c"].create_entry("t", N, "ep-c", b"1")
    c.run(1.0)
    c.kill("c")
    c.run(4.0)
    assert c.view("a", "t", N) == {"ep-c": b"1"}
    c.run(1.2)
    assert c.view("a", "t", N) == {}
    assert c.watched("a", N) == {}
    assert c.dbs["a"].peers(N) == ["b"]


def test_a_node_back_after_its_entries_were_reaped_brings_them_back() -> None:
    c = cluster(["a", "b", "c"], config=NetDBConfig(dead_node_reap_s=5.0))
    c.dbs["c"].create_entry("t", N, "ep-c", b"1")
    c.run(1.0)
    c.partition(["c"], ["a", "b"])
    c.run(6.0)
    assert c.view("a", "t", N) == {}
    c.heal()
    c.run(2.0)
    assert c.view("a", "t", N) == {"ep-c": b"1"}
    assert c.watched("a", N) == {"ep-c": b"1"}


def test_a_node_that_leaves_gracefully_has_its_entries_deleted_at_once() -> None:
    c = cluster(["a", "b", "c"])
    c.dbs["c"].create_entry("t", N, "ep-c", b"1")
    c.run(1.0)
    c.leave("c")
    assert c.view("a", "t", N) == {}
    assert c.watched("a", N) == {}


def test_a_node_leaving_a_network_has_its_entries_deleted_on_the_others_and_forgets_the_network() -> None:
    c = cluster(["a", "b", "c"])
    c.dbs["a"].create_entry("t", N, "ep-a", b"1")
    c.dbs["c"].create_entry("t", N, "ep-c", b"1")
    c.run(1.0)
    c.dbs["c"].leave_network(N)
    c.run(1.0)
    assert c.view("a", "t", N) == {"ep-a": b"1"}
    assert c.dbs["a"].peers(N) == ["b"]
    assert c.dbs["c"].walk("t", N) == []
    assert c.watched("c", N) == {}


def test_local_writes_are_refused_with_messages_naming_the_value() -> None:
    db = NetworkDB("a")
    with pytest.raises(NotFound) as e:
        db.create_entry("t", N, "k", b"v")
    assert str(e.value) == "network net1 is not joined by node a"
    db.join_network(N)
    db.create_entry("t", N, "k", b"v")
    with pytest.raises(Conflict) as c:
        db.create_entry("t", N, "k", b"v")
    assert str(c.value) == "cannot create entry in table t with network id net1 and key k, already exists"
    with pytest.raises(NotFound) as u:
        db.update_entry("t", N, "nope", b"v")
    assert str(u.value) == "cannot update entry in table t with network id net1 and key nope, does not exist"
    with pytest.raises(NotFound) as d:
        db.delete_entry("t", N, "nope")
    assert str(d.value) == "cannot delete entry in table t with network id net1 and key nope, does not exist"
    with pytest.raises(InvalidParameter) as big:
        db.create_entry("t", N, "k2", b"x" * 4097)
    assert str(big.value) == "value of 4097 bytes for key k2 exceeds 4096"
    with pytest.raises(InvalidParameter) as wide:
        db.create_entry("t", N, "k1160", b"x" * 1160)
    assert str(wide.value) == "entry k1160 of 1198 bytes does not fit in a gossip packet (1187 bytes)"
    with pytest.raises(InvalidParameter) as bad:
        db.create_entry("t", N, "bad\nkey", b"")
    assert str(bad.value) == "invalid key 'bad\\nkey': must be 1 to 256 printable characters"
    with pytest.raises(NotFound) as lv:
        db.leave_network("nope")
    assert str(lv.value) == "could not find network nope while trying to leave"
    assert db.walk("t", N) == [db.walk("t", N)[0]] and db.get_entry("t", N, "k") == b"v"


@pytest.mark.parametrize("data", [
    b"\xff\xff\xff",  # not protobuf
    b"",  # empty
    b"\x0a" + b"\x80" * 20,  # a length that never ends
    b"x" * (w.MAX_MESSAGE + 1),  # too big
    w.encode(w.NetworkEvent(type=w.NetworkEvent.JOIN, ltime=0, node_name="x", network_id=N)),  # clock 0
    w.encode(w.NetworkEvent(type=w.NetworkEvent.JOIN, ltime=1 << 63, node_name="x", network_id=N)),  # clock too big
    w.encode(w.NetworkEvent(type=w.NetworkEvent.JOIN, ltime=3, node_name="", network_id=N)),  # no node
    w.encode(w.TableEvents(from_node="b", events=[w.TableEvent(type=w.TableEvent.CREATE, ltime=5, node_name="b",
                                                               network_id=N, table_name="t", key="k" * 257)])),
    w.encode(w.TableEvents(from_node="b", events=[w.TableEvent(type=w.TableEvent.CREATE, ltime=5, node_name="b",
                                                               network_id=N, table_name="t", key="k", value=b"v" * 4097)])),
    w.encode(w.TableEvents(from_node="b", events=[w.TableEvent(type=7, ltime=5, node_name="b",  # type: ignore[arg-type]
                                                               network_id=N, table_name="t", key="k")])),
    w.encode(w.BulkSync(node_name="b", network_id=N, part=3, parts=2)),
    w.encode(w.BulkSync(node_name="b", network_id=N, part=0, parts=1, entries=[w.TableEvent(
        type=w.TableEvent.CREATE, ltime=5, node_name="b", network_id="elsewhere", table_name="t", key="k")])),
    w.encode(w.SyncDigest(node_name="b", network_id=N, table_clock=3, digest=b"short")),
    w.encode(w.SyncDigest(node_name="b", network_id=N, table_clock=1 << 63, digest=b"d" * w.DIGEST_SIZE)),
    w.encode(w.SyncDigest(node_name="b", network_id="", table_clock=3, digest=b"d" * w.DIGEST_SIZE)),
    w.Message(deflated=b"not zlib").SerializeToString(),
    w.Message(deflated=zlib.compress(b"\0" * (w.MAX_MESSAGE + 1))).SerializeToString(),  # a bomb
    w.Message(deflated=zlib.compress(w.Message(deflated=zlib.compress(
        w.encode(w.NetworkEvent(type=w.NetworkEvent.JOIN, ltime=3, node_name="x", network_id=N)))).SerializeToString())
              ).SerializeToString(),  # deflated twice
    w.Message(deflated=zlib.compress(w.encode(w.NetworkEvent(type=w.NetworkEvent.JOIN, ltime=3, node_name="x",
                                                             network_id=N)))[:-3]).SerializeToString(),  # truncated
])
def test_a_bad_peer_message_is_dropped_and_counted_and_changes_nothing(data: bytes) -> None:
    c = cluster(["a", "b"])
    c.dbs["b"].create_entry("t", N, "k0", b"v")
    c.run(1.0)
    before = (c.view("a", "t", N), c.dbs["a"].network_clock.value, c.dbs["a"].table_clock.value, c.dbs["a"].peers(N))
    c.dbs["a"].notify_msg(data)
    assert c.dbs["a"].counters["invalid"] == 1
    assert (c.view("a", "t", N), c.dbs["a"].network_clock.value, c.dbs["a"].table_clock.value, c.dbs["a"].peers(N)) == before


def test_a_bad_push_pull_state_is_dropped_and_counted() -> None:
    db = NetworkDB("a")
    db.merge_remote_state(b"\x0a\x05ab", True)
    db.merge_remote_state(w.PushPull(node_name="b", network_clock=1 << 63).SerializeToString(), True)
    assert db.counters["invalid"] == 2
    assert db.network_clock.value == 0 and db.attachments == {}


def test_events_for_a_network_this_node_did_not_join_are_ignored() -> None:
    db = NetworkDB("a")
    db.notify_join(member("b"))
    ev = w.TableEvents(from_node="b", events=[w.TableEvent(type=w.TableEvent.CREATE, ltime=5, node_name="b",
                                                           network_id=N, table_name="t", key="k", value=b"v")])
    db.notify_msg(w.encode(ev))
    assert db.entries == {} and db.counters["not_member"] == 1


def test_a_watch_replays_the_live_entries_and_stops_when_cancelled() -> None:
    db = NetworkDB("a")
    db.join_network(N)
    db.create_entry("t", N, "k1", b"1")
    db.create_entry("t", N, "k2", b"2")
    db.delete_entry("t", N, "k2")
    seen: list[tuple[str, str, str, bytes]] = []
    cancel = db.watch("t", lambda *a: seen.append(a))
    assert seen == [(CREATE, N, "k1", b"1")]
    cancel()
    db.create_entry("t", N, "k3", b"3")
    assert seen == [(CREATE, N, "k1", b"1")]


def test_a_failing_watcher_does_not_stop_the_table_or_the_other_watchers() -> None:
    db = NetworkDB("a")
    db.join_network(N)
    seen: list[str] = []

    def bad(*_a: object) -> None:
        raise RuntimeError("boom")
    db.watch("t", bad)
    db.watch("t", lambda ev, nid, key, val: seen.append(key))
    db.create_entry("t", N, "k1", b"1")
    assert seen == ["k1"] and db.get_entry("t", N, "k1") == b"1"


def test_a_forged_event_about_this_nodes_own_entry_is_overwritten_by_a_newer_tombstone() -> None:
    c = cluster(["a", "b"])
    forged = w.TableEvents(from_node="b", events=[w.TableEvent(type=w.TableEvent.CREATE, ltime=50, node_name="a",
                                                               network_id=N, table_name="t", key="ghost", value=b"x")])
    c.dbs["b"].notify_msg(w.encode(forged))  # b believes a owns "ghost"
    assert c.view("b", "t", N) == {"ghost": b"x"}
    c.run(2.0)
    assert c.view("a", "t", N) == {} and c.view("b", "t", N) == {}
    assert c.dbs["a"].entries[N][("t", "ghost")].ltime > 50


def test_a_member_marked_dead_by_update_is_treated_as_failed() -> None:
    c = cluster(["a", "b"])
    c.dbs["b"].create_entry("t", N, "k", b"1")
    c.run(1.0)
    c.dbs["a"].notify_update(member("b", MemberState.DEAD))
    assert c.dbs["a"].walk("t", N)[0].suspended is True
    assert c.dbs["a"].peers(N) == []


def test_a_received_event_too_big_to_gossip_on_is_dropped_from_the_queue_not_stuck_in_it() -> None:
    import random

    c = cluster(["a", "b", "c"], config=NetDBConfig(packet_budget=400))
    noise = random.Random(0).randbytes(500)  # wider than b's packets even deflated
    big = w.TableEvents(from_node="a", events=[w.TableEvent(type=w.TableEvent.CREATE, ltime=90, node_name="a",
                                                            network_id=N, table_name="t", key="big", value=noise)])
    c.dbs["b"].notify_msg(w.encode(big))  # accepted (within the wire's limits) but wider than b's packets
    c.dbs["b"].create_entry("t", N, "small", b"1")
    c.run(1.0)
    assert c.view("c", "t", N)["small"] == b"1"
    assert c.dbs["b"]._nq[N].oversized == 1


def test_a_node_joining_a_big_network_gets_a_few_bulk_syncs_not_one_from_every_member() -> None:
    names = [f"n{i:02d}" for i in range(16)]
    c = cluster(names + ["new"], nets={**{n: [N] for n in names}, "new": []})
    for n in names:
        c.dbs[n].create_entry("t", N, f"ep-{n}", b"1")
    c.run(2.0)
    start = len(c.delivered)
    c.dbs["new"].join_network(N)
    c.run(1.0)
    senders = {src for src, dst, data in c.delivered[start:]
               if dst == "new" and w.decode_message(data).WhichOneof("body") == "bulk_sync"}
    assert 1 <= len(senders) <= 8
    assert len(c.view("new", "t", N)) == 16


def _missing_after_a_service_starts_everywhere(config: NetDBConfig, seed: int, loss: float) -> int:
    """Five nodes join a network at once and each writes 4 entries over the next second (20 tasks starting over 5
    nodes), at a message loss rate: how many (node, entry) pairs are missing 3 s later, long before a periodic sync."""
    from tests.unit.netdb_fake import FakeCluster

    names = [f"n{i}" for i in range(5)]
    c = FakeCluster(seed, config, loss=loss)
    for n in names:
        c.add(n)
    c.run(2.0)
    for n in names:
        c.dbs[n].join_network(N)
    for k in range(4):
        for n in names:
            c.dbs[n].create_entry("t", N, f"{n}-{k}", b"1")
        c.run(0.3)
    c.run(3.0)
    return sum(20 - len(c.view(n, "t", N)) for n in names)


def test_entries_written_while_every_node_joins_reach_every_node_in_seconds_at_10_percent_loss() -> None:
    assert sum(_missing_after_a_service_starts_everywhere(NetDBConfig(), seed, 0.1) for seed in range(40)) == 0


def test_without_the_pulls_again_after_a_join_entries_wait_for_the_periodic_sync() -> None:
    # the control for the test above: what join_repull_s closes (measured: 6 missing of 4,000)
    bare = NetDBConfig(join_repull_s=())
    assert sum(_missing_after_a_service_starts_everywhere(bare, seed, 0.1) for seed in range(40)) > 0


def test_unfinished_multi_part_syncs_are_bounded() -> None:
    from agent.gossip.netdb import MAX_ASSEMBLIES

    c = cluster(["a", "b"])
    for i in range(MAX_ASSEMBLIES + 50):
        part = w.BulkSync(node_name="b", network_id=N, sync_id=i + 1, part=0, parts=2)
        c.dbs["a"].notify_msg(w.encode(part))
    assert len(c.dbs["a"]._assemblies) == MAX_ASSEMBLIES
    assert ("b", N, MAX_ASSEMBLIES + 50) in c.dbs["a"]._assemblies


def test_a_node_whose_attachments_arrive_before_its_join_gets_the_entries_when_it_joins() -> None:
    a, b = NetworkDB("a"), NetworkDB("b")
    a.join_network(N)
    a.create_entry("t", N, "ep-a", b"1")
    b.join_network(N)  # no peers known yet: no sync at join
    assert b.take_outgoing() == [] and a.take_outgoing() == []
    a.merge_remote_state(b.local_state(True), True)  # the push-pull came first
    b.merge_remote_state(a.local_state(True), True)
    a.notify_join(member("b"))  # then the core reports the member
    for to, data in a.take_outgoing():
        assert to == "b"
        b.notify_msg(data)
    assert b.get_entry("t", N, "ep-a") == b"1"


def test_a_returning_node_is_asked_again_when_the_first_resync_is_lost() -> None:
    c = cluster(["a", "b", "c"])
    c.dbs["c"].create_entry("t", N, "ep-c", b"1")
    c.run(1.0)
    c.partition(["c"], ["a", "b"])
    c.dbs["c"].delete_entry("t", N, "ep-c")
    c.run(3.0)
    c.heal()
    c.loss = 1.0  # the first second after the heal loses everything: resync requests, answers, the delete's gossip
    c.run(1.0)
    c.loss = 0.0
    assert [(e.key, e.suspended) for e in c.dbs["a"].walk("t", N)] == [("ep-c", True)]
    c.run(5.0)  # well before the periodic bulk sync (30 s)
    assert c.view("a", "t", N) == {} and c.view("b", "t", N) == {}
    assert c.watched("a", N) == {}


def _kinds(msgs: list[tuple[str, bytes]]) -> list[tuple[str, str]]:
    return [(to, w.decode_message(data).WhichOneof("body")) for to, data in msgs]


def test_a_pull_from_a_node_holding_the_same_entries_is_one_small_message_answered_by_none() -> None:
    c = cluster(["a", "b"], config=NetDBConfig(join_repull_s=(), bulk_sync_interval_s=3600))
    c.dbs["a"].create_entry("t", N, "ep-a", b"1")
    c.dbs["b"].create_entry("t", N, "ep-b", b"2")
    c.run(2.0)
    a, b = c.dbs["a"], c.dbs["b"]
    assert a.table_digest(N) == b.table_digest(N)
    a._pull("b", N)
    [(to, data)] = a.take_outgoing()
    assert _kinds([(to, data)]) == [("b", "sync_digest")] and len(data) < 100
    b.notify_msg(data)
    assert b.take_outgoing() == [] and b.counters["in_sync"] == 1


def test_a_pull_from_a_node_whose_entries_differ_is_answered_by_both_bulk_syncs() -> None:
    c = cluster(["a", "b"], config=NetDBConfig(join_repull_s=(), bulk_sync_interval_s=3600))
    a, b = c.dbs["a"], c.dbs["b"]
    a.create_entry("t", N, "ep-a", b"1")
    b.create_entry("t", N, "ep-b", b"2")
    for db in (a, b):  # the table events are lost
        db._nq.clear()
    a._pull("b", N)
    [(_, request)] = a.take_outgoing()
    b.notify_msg(request)
    answer = b.take_outgoing()
    assert _kinds(answer) == [("a", "bulk_sync")] and w.decode_message(answer[0][1]).bulk_sync.reply_wanted
    a.notify_msg(answer[0][1])
    [(to, reply)] = a.take_outgoing()
    assert to == "b"
    b.notify_msg(reply)
    assert c.view("a", "t", N) == c.view("b", "t", N) == {"ep-a": b"1", "ep-b": b"2"}
    assert a.table_digest(N) == b.table_digest(N)


def test_a_pull_from_a_node_not_on_the_network_is_answered_not_member() -> None:
    c = cluster(["a", "b"], nets={"a": [N], "b": []}, config=NetDBConfig(join_repull_s=()))
    c.dbs["a"]._pull("b", N)
    [(_, request)] = c.dbs["a"].take_outgoing()
    c.dbs["b"].notify_msg(request)
    [(to, data)] = c.dbs["b"].take_outgoing()
    assert to == "a" and w.decode_message(data).bulk_sync.not_member


def test_the_digest_tells_apart_a_tombstone_a_suspended_entry_and_another_value() -> None:
    def digest_after(change) -> bytes:
        db = NetworkDB("a")
        db.join_network(N)
        db.notify_join(member("b"))
        db.notify_msg(w.encode(w.TableEvents(from_node="b", events=[w.TableEvent(
            type=w.TableEvent.CREATE, ltime=5, node_name="b", network_id=N, table_name="t", key="k", value=b"v")])))
        change(db)
        return db.table_digest(N)
    e = lambda db: db.entries[N][("t", "k")]  # noqa: E731
    digests = [digest_after(lambda db: None),
               digest_after(lambda db: setattr(e(db), "deleting", True)),
               digest_after(lambda db: db.notify_leave(member("b", MemberState.DEAD))),
               digest_after(lambda db: setattr(e(db), "value", b"w")),
               digest_after(lambda db: setattr(e(db), "ltime", 6))]
    assert len(set(digests)) == len(digests)
    assert digest_after(lambda db: None) == digests[0]


def test_the_pulls_after_a_join_and_the_periodic_one_send_digests() -> None:
    c = cluster(["a", "b", "c"], nets={"a": [N], "b": [N], "c": []},
                config=NetDBConfig(join_repull_s=(1.0, 3.0), bulk_sync_interval_s=5.0))
    c.dbs["a"].create_entry("t", N, "ep-a", b"1")
    c.run(1.0)
    start = len(c.delivered)
    c.dbs["c"].join_network(N)
    c.run(4.4)  # c's two pulls after its join, a's and b's second ones after theirs, one periodic pull of each
    digests = [src for src, _dst, data in c.delivered[start:]
               if w.decode_message(data).WhichOneof("body") == "sync_digest"]
    assert sorted(digests) == ["a", "a", "b", "b", "c", "c", "c"]
    assert all(c.view(n, "t", N) == {"ep-a": b"1"} for n in "abc")


def _record(i: int) -> bytes:
    """An endpoint_table value as the service glue writes it (random ids: what deflate has to work with)."""
    import random
    import string
    rnd = random.Random(i)
    tid = "".join(rnd.choice(string.ascii_lowercase + string.digits) for _ in range(25))
    return (b'{"service_id":"q8mz3l0v9r2x7c4n1b6k5j0h2","service_name":"web","vip":"10.0.1.2","task_ip":"10.0.1.%d",'
            b'"task_name":"web.%d.%s","task_id":"%s","aliases":[],"ingress_ports":[]}' % (10 + i, i, tid.encode(),
                                                                                      tid.encode()))


def test_a_deflated_message_decodes_as_the_message_itself() -> None:
    ev = w.TableEvents(from_node="a", events=[w.TableEvent(type=w.TableEvent.CREATE, ltime=i + 1, node_name="a",
                                                           network_id=N, table_name="endpoint_table", key=f"t{i}",
                                                           value=_record(i)) for i in range(6)])
    raw = w.encode(ev)
    packed = w.deflate(raw)
    assert len(packed) < len(raw) / 2
    assert w.decode_message(packed) == w.decode_message(raw)
    tiny = w.encode(w.NetworkEvent(type=w.NetworkEvent.JOIN, ltime=3, node_name="x", network_id=N))
    assert w.deflate(tiny) == tiny  # not worth it: sent as it is


def test_table_events_joined_from_framed_events_equal_the_protobuf_encoding() -> None:
    evs = [w.TableEvent(type=w.TableEvent.DELETE, ltime=300 + i, node_name="node-a", network_id=N, table_name="t",
                        key=f"k{i}", value=b"v" * (i * 70)) for i in range(4)]
    assert w.encode_table_events("node-a", [w.frame_event(e.SerializeToString()) for e in evs]) == \
        w.encode(w.TableEvents(from_node="node-a", events=evs))
    assert w.encode_table_events("node-a", []) == w.encode(w.TableEvents(from_node="node-a"))


def test_a_round_packs_as_many_queued_events_as_fit_a_packet_once_deflated() -> None:
    c = cluster(["a", "b"], config=NetDBConfig(join_repull_s=()))
    a = c.dbs["a"]
    for i in range(12):  # ~300 bytes each: 4 would fit a 1200-byte packet as they are
        a.create_entry("endpoint_table", N, f"task{i:02d}", _record(i))
    a.tick(c.now + 1.0)
    [(to, data)] = a.take_outgoing()
    assert to == "b" and len(data) <= a.config.packet_budget
    assert len(w.decode_message(data).table_events.events) == 12


def test_a_bulk_sync_comes_in_deflated_parts_that_fit_the_packet_budget() -> None:
    c = cluster(["a", "b"], nets={"a": [N], "b": []}, config=NetDBConfig(join_repull_s=()))
    a = c.dbs["a"]
    for i in range(40):
        a.create_entry("endpoint_table", N, f"task{i:02d}", _record(i))
    c.run(1.0)
    a._sync_to("b", N, reply_wanted=False)
    parts = [data for _, data in a.take_outgoing()]
    raw = sum(e.ByteSize() for e in (w.decode_message(p).bulk_sync for p in parts))
    assert len(parts) <= raw // a.config.packet_budget // 2  # half the parts of the raw bulk sync, or fewer
    assert all(len(p) <= a.config.packet_budget for p in parts)
    b = c.dbs["b"]
    b.join_network(N)
    b.take_outgoing()
    for p in parts:
        b.notify_msg(p)
    assert len(c.view("b", "endpoint_table", N)) == 40


def test_the_names_found_valid_are_remembered_within_a_bound() -> None:
    db = NetworkDB("a")
    db.join_network(N)
    for i in range(3):
        db.notify_msg(w.encode(w.TableEvents(from_node="b", events=[w.TableEvent(
            type=w.TableEvent.CREATE, ltime=5 + j, node_name="b", network_id=N, table_name="t", key=f"k{i}-{j}")
            for j in range(2000)])))
    assert 0 < len(w._known) <= w._KNOWN_MAX
    bad = w.TableEvents(from_node="b", events=[w.TableEvent(type=w.TableEvent.CREATE, ltime=9, node_name="b",
                                                            network_id=N, table_name="t", key="bad\nkey")])
    db.notify_msg(w.encode(bad))
    assert db.counters["invalid"] == 1


def _sent_to(db: NetworkDB, node: str) -> tuple[set[str], set[str]]:
    """Keys of the entries db sent node: (in bulk syncs, in table events)."""
    synced, evented = set(), set()
    for to, data in db.take_outgoing():
        if to != node:
            continue
        m = w.decode_message(data)
        if m.WhichOneof("body") == "bulk_sync":
            synced |= {e.key for e in m.bulk_sync.entries}
        elif m.WhichOneof("body") == "table_events":
            evented |= {e.key for e in m.table_events.events}
    return synced, evented


def _member_of_eight(seed: int) -> NetworkDB:
    """a on N with seven other members, holding an entry of its own written at t=10 and one of m0's."""
    db = NetworkDB("a", random.Random(seed))
    for i in range(7):
        db.notify_join(member(f"m{i}"))
        db.notify_msg(w.encode(w.NetworkEvent(type=w.NetworkEvent.JOIN, ltime=i + 1, node_name=f"m{i}", network_id=N)))
    db.join_network(N)
    db.tick(10.0)
    db.create_entry("t", N, "a-1", b"mine")
    db.notify_msg(w.encode(w.TableEvents(from_node="m0", events=[w.TableEvent(
        type=w.TableEvent.CREATE, ltime=1, node_name="m0", network_id=N, table_name="t", key="m0-1", value=b"x")])))
    db.take_outgoing()
    return db


def _hears_of_a_join_at(db: NetworkDB, now: float) -> None:
    db.tick(now)
    db.notify_join(member("new"))
    db.notify_msg(w.encode(w.NetworkEvent(type=w.NetworkEvent.JOIN, ltime=99, node_name="new", network_id=N)))


def test_a_member_that_hears_of_a_join_sends_the_newcomer_its_recent_writes_or_the_whole_table() -> None:
    # Eight members: the whole table goes to a newcomer only from ~fanout of them (a draw of 3/8 each); every other
    # one sends what it wrote lately, which may have gone out before it heard of the join (to the members it knew).
    outcomes = set()
    for seed in range(20):
        db = _member_of_eight(seed)
        _hears_of_a_join_at(db, 10.5)
        synced, evented = _sent_to(db, "new")
        outcomes.add((frozenset(synced), frozenset(evented)))
    assert outcomes == {(frozenset({"a-1", "m0-1"}), frozenset()), (frozenset(), frozenset({"a-1"}))}


def test_a_member_that_wrote_nothing_lately_sends_a_newcomer_nothing_unless_drawn() -> None:
    outcomes = set()
    for seed in range(20):
        db = _member_of_eight(seed)
        _hears_of_a_join_at(db, 10.0 + NetDBConfig().recent_write_s + 0.1)
        synced, evented = _sent_to(db, "new")
        outcomes.add((frozenset(synced), frozenset(evented)))
    assert outcomes == {(frozenset({"a-1", "m0-1"}), frozenset()), (frozenset(), frozenset())}


def test_entry_owners_counts_each_nodes_live_entries_by_table_and_leaves_deleted_ones_out() -> None:
    c = cluster(["a", "b", "c"])
    c.dbs["a"].create_entry("t", N, "ep1", b"v")
    c.dbs["a"].create_entry("u", N, "ep1", b"v")
    c.dbs["b"].create_entry("t", N, "ep2", b"v")
    c.dbs["b"].create_entry("t", N, "ep3", b"v")
    c.run(1.0)
    c.dbs["b"].delete_entry("t", N, "ep3")
    c.run(1.0)
    assert c.dbs["c"].entry_owners(N) == {"a": {"t": 1, "u": 1}, "b": {"t": 1}}
