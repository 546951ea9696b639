"""State files of the engine (shoal.engine.state, container records): atomic writes through
common.fsutil, unreadable records moved aside and reported, stale temp files removed."""
from __future__ import annotations

import json
import os

import pytest

from shoal.engine.records import ContainerRecord, EndpointRecord, container_from_dict, to_dict
from shoal.engine.state import StateDir

ID = "ab" * 32


def record_dict() -> dict:
    record = ContainerRecord(id=ID, name="web", image="busybox", image_id="sha256:" + "0" * 64, created="t")
    record.endpoints["n" * 64] = EndpointRecord(id="e" * 64, network_id="n" * 64, container_id=ID)
    return to_dict(record)


def test_a_saved_record_loads_back_equal_and_leaves_no_temp_file(tmp_path):
    state = StateDir(tmp_path)
    state.save("containers", ID, record_dict())
    loaded = StateDir(tmp_path).load_records("containers", container_from_dict)
    assert to_dict(loaded[ID]) == record_dict()
    assert sorted(p.name for p in (tmp_path / "containers").iterdir()) == [f"{ID}.json"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"id": "ab', "JSONDecodeError: Unterminated string starting at: line 1 column 8 (char 7)"),
        (b"{}", "TypeError: ContainerRecord.__init__() missing 5 required positional arguments: "
                "'id', 'name', 'image', 'image_id', and 'created'"),
        (b"[]", "TypeError: a JSON list, not an object"),
        (b"", "JSONDecodeError: Expecting value: line 1 column 1 (char 0)"),
    ],
    ids=["truncated", "empty-object", "list", "zero-bytes"],
)
def test_an_unreadable_container_record_is_moved_aside_and_named_in_a_warning(tmp_path, content, reason):
    state = StateDir(tmp_path)
    state.save("containers", "c" * 64, {**record_dict(), "id": "c" * 64})
    bad = tmp_path / "containers" / f"{ID}.json"
    bad.write_bytes(content)
    loaded = state.load_records("containers", container_from_dict)
    assert list(loaded) == ["c" * 64]
    aside = [p for p in (tmp_path / "containers").iterdir() if p.name.startswith(f"{ID}.json.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes() == content
    assert not bad.exists()
    assert state.warnings == [f"WARNING: unreadable state file {bad} moved to {aside[0]}: {reason}"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"pid": "12"}, "TypeError: ContainerRecord field pid: expected int, got str"),
        ({"pid": True}, "TypeError: ContainerRecord field pid: expected int, got bool"),
        ({"args": "sleep 1"}, "TypeError: ContainerRecord field args: expected list[str], got str"),
        ({"endpoints": []}, "TypeError: ContainerRecord field endpoints: expected dict[str, EndpointRecord], got list"),
        ({"endpoints": {"n": {"id": 1}}}, "TypeError: EndpointRecord field id: expected str, got int"),
        ({"state": "sleeping"}, "ValueError: field state: 'sleeping' is not one of created, running, exited, dead, removing"),
        ({"id": "xyz"}, "ValueError: field id: 'xyz' is not 64 hex digits"),
    ],
    ids=["pid-str", "pid-bool", "args-str", "endpoints-list", "endpoint-id-int", "state", "id"],
)
def test_a_container_record_with_a_wrong_type_is_moved_aside(tmp_path, change, reason):
    state = StateDir(tmp_path)
    (tmp_path / "containers" / f"{ID}.json").write_text(json.dumps({**record_dict(), **change}))
    assert state.load_records("containers", container_from_dict) == {}
    assert len(state.warnings) == 1 and state.warnings[0].endswith(f": {reason}")


def test_a_bad_network_record_is_moved_aside_by_load_all(tmp_path):
    state = StateDir(tmp_path)
    (tmp_path / "networks" / "n1.json").write_text('{"name": "a"')
    state.save("networks", "n2", {"name": "b"})
    assert state.load_all("networks") == {"n2": {"name": "b"}}
    assert [p.name.split(".corrupt-")[0] for p in (tmp_path / "networks").iterdir() if ".corrupt-" in p.name] == [
        "n1.json"
    ]


def test_a_moved_aside_record_is_not_loaded_again(tmp_path):
    state = StateDir(tmp_path)
    (tmp_path / "containers" / f"{ID}.json").write_text("{}")
    state.load_records("containers", container_from_dict)
    again = StateDir(tmp_path)
    assert again.load_records("containers", container_from_dict) == {}
    assert again.warnings == []


def test_stale_temp_files_of_a_crash_are_removed_at_start_and_records_kept(tmp_path):
    StateDir(tmp_path).save("ipam", "n1", {"a": 1})
    leftovers = [
        tmp_path / "ipam" / ".tmp-n1.json.4242",  # common.fsutil's temp name
        tmp_path / "containers" / f".{ID}.json.tmp",  # the engine's earlier helper
        tmp_path / ".tmp-engine-id.17",
    ]
    for path in leftovers:
        path.write_bytes(b"")
    StateDir(tmp_path)
    assert [p for p in leftovers if p.exists()] == []
    assert (tmp_path / "ipam" / "n1.json").exists()


def test_a_failed_write_keeps_the_old_record_and_leaves_no_temp_file(tmp_path):
    state = StateDir(tmp_path)
    state.save("containers", ID, record_dict())
    with pytest.raises(TypeError):
        state.save("containers", ID, {"x": object()})
    assert json.loads((tmp_path / "containers" / f"{ID}.json").read_text()) == record_dict()
    assert os.listdir(tmp_path / "containers") == [f"{ID}.json"]


def test_a_bad_engine_id_is_moved_aside_and_replaced(tmp_path):
    state = StateDir(tmp_path)
    (tmp_path / "engine-id").write_text("")
    new_id = state.daemon_id()
    assert len(new_id) == 64 and StateDir(tmp_path).daemon_id() == new_id
    assert len(state.warnings) == 1 and "engine-id" in state.warnings[0]


@pytest.mark.parametrize("text", ["{}", '{"id": 5, "name": "x", "driver": "bridge", "created": "t"}', "[]"])
def test_an_empty_or_mistyped_network_record_is_moved_aside_and_the_others_load(tmp_path, text):
    from agent.network.records import NetworkRecord, network_from_dict

    state = StateDir(tmp_path)
    good = NetworkRecord(id="g" * 64, name="good", driver="bridge", created="t")
    state.save("networks", good.id, to_dict(good))
    (tmp_path / "networks" / f"{'b' * 64}.json").write_text(text)
    loaded = state.load_records("networks", network_from_dict)
    assert list(loaded) == [good.id] and loaded[good.id] == good
    assert len(state.warnings) == 1 and "b" * 64 in state.warnings[0]


def test_a_record_saved_as_a_dataclass_is_the_json_of_its_asdict_and_loads_back_equal(tmp_path):
    record = container_from_dict(record_dict())
    record.create_config = {"Cmd": ["httpd", "-f"], "Labels": {"a": "b"}}
    StateDir(tmp_path).save("containers", ID, record)
    saved = (tmp_path / "containers" / f"{ID}.json").read_bytes()
    assert json.loads(saved) == to_dict(record)
    assert to_dict(StateDir(tmp_path).load_records("containers", container_from_dict)[ID]) == to_dict(record)


def test_saving_what_is_neither_json_nor_a_record_is_refused_and_keeps_the_old_record(tmp_path):
    state = StateDir(tmp_path)
    state.save("containers", ID, record_dict())
    with pytest.raises(TypeError) as caught:
        state.save("containers", ID, {"bad": object()})
    assert str(caught.value) == "Object of type object is not JSON serializable"
    assert json.loads((tmp_path / "containers" / f"{ID}.json").read_bytes()) == record_dict()


def test_group_add_and_oom_score_adj_are_the_same_run_options_after_a_restart(tmp_path):
    from shoal.engine.createopts import of_container

    record = container_from_dict(record_dict())
    record.host_config = {"GroupAdd": ["audio", "4242"], "OomScoreAdj": -500}
    StateDir(tmp_path).save("containers", ID, to_dict(record))
    loaded = StateDir(tmp_path).load_records("containers", container_from_dict)[ID]
    options = of_container(loaded)
    assert (options.group_add, options.oom_score_adj) == (["audio", "4242"], -500)
