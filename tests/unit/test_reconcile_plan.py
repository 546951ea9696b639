"""The restart reconciliation plan of containers (shoal.engine.reconcile.plan): records against
the runtime's view and `runc list`."""
from __future__ import annotations

from shoal.engine.reconcile import LOST_EXIT_CODE, Observed, Plan, RuncEntry, plan


def test_a_running_record_whose_container_runs_is_adopted():
    got = plan({"a": "running"}, {"a": Observed("running")}, {"a": RuncEntry("running", True)}, {"a"}, {"a"})
    assert got == Plan(adopt=["a"])


def test_a_running_record_whose_container_exited_gets_the_code_of_the_shim():
    got = plan({"a": "running"}, {"a": Observed("exited", 7)}, {"a": RuncEntry("stopped", True)}, {"a"}, set())
    assert got == Plan(finish={"a": 7})


def test_a_running_record_whose_container_is_gone_without_a_code_gets_255():
    got = plan({"a": "running"}, {"a": Observed("unknown")}, {}, set(), set())
    assert got == Plan(finish={"a": LOST_EXIT_CODE})
    assert LOST_EXIT_CODE == 255


def test_a_running_record_whose_state_cannot_be_read_is_adopted_not_marked_exited():
    got = plan({"a": "running"}, {"a": Observed("unreadable")}, None, {"a"}, set())
    assert got == Plan(adopt=["a"])


def test_a_created_record_whose_container_runs_in_runc_is_discarded():
    got = plan({"a": "created"}, {"a": Observed("running")}, {"a": RuncEntry("running", True)}, {"a"}, set())
    assert got == Plan(discard=["a"])


def test_a_created_record_with_a_start_in_progress_is_discarded():
    got = plan({"a": "created"}, {"a": Observed("created", None, True)}, {}, {"a"}, set())
    assert got == Plan(discard=["a"])


def test_an_exited_record_with_its_stopped_runc_container_is_kept():
    got = plan({"a": "exited"}, {"a": Observed("exited", 0)}, {"a": RuncEntry("stopped", True)}, {"a"}, {"a"})
    assert got == Plan()


def test_runc_containers_and_bundles_without_a_record_are_removed_when_ours():
    got = plan(
        {}, {},
        {"orphan": RuncEntry("running", True), "theirs": RuncEntry("running", False)},
        {"orphan", "bundle-only"}, {"etc-only"},
    )
    assert got == Plan(remove=["orphan", "bundle-only"], foreign=["theirs"], remove_etc_dirs=["etc-only"])


def test_without_an_answer_from_runc_only_bundles_without_a_record_are_removed():
    got = plan({"a": "exited"}, {"a": Observed("exited", 0)}, None, {"a", "b"}, set())
    assert got == Plan(remove=["b"])


def test_what_runs_under_the_id_of_a_moved_aside_record_is_left_alone():
    got = plan({"a": "unreadable"}, {}, {"a": RuncEntry("running", True)}, {"a"}, {"a"})
    assert got == Plan()


def test_a_stopped_record_that_still_holds_network_resources_releases_them():
    got = plan({"a": "created", "b": "exited"}, {"a": Observed("created"), "b": Observed("exited", 0)}, {}, set(),
               set(), {"a", "b"})
    assert got == Plan(release=["a", "b"])
