"""shoal.engine.restart: policy validation with moby's messages and the restart manager's backoff."""
from __future__ import annotations

import pytest

from common.errdefs import InvalidParameter
from shoal.engine.restart import Backoff, RestartPolicy, parse_policy, should_restart_at_boot


def _policy(name: str, count: int = 0) -> RestartPolicy:
    return parse_policy({"RestartPolicy": {"Name": name, "MaximumRetryCount": count}})


def test_no_policy_and_empty_name_mean_no():
    assert parse_policy({}).is_none
    assert _policy("").is_none
    assert _policy("no").is_none


def test_negative_retry_count_is_refused_with_mobys_message():
    with pytest.raises(InvalidParameter, match=r"^invalid restart policy: maximum retry count cannot be negative$"):
        _policy("on-failure", -1)


def test_retry_count_with_always_is_refused():
    with pytest.raises(InvalidParameter, match=(
            r"^invalid restart policy: maximum retry count can only be used with 'on-failure'$")):
        _policy("always", 3)


def test_unknown_policy_is_refused_naming_it():
    with pytest.raises(InvalidParameter, match=r"^invalid restart policy: unknown policy 'sometimes'; use one of "
                                                r"'no', 'always', 'on-failure', or 'unless-stopped'$"):
        _policy("sometimes")


def test_auto_remove_with_a_policy_is_refused_as_the_daemon_does():
    with pytest.raises(InvalidParameter, match=r"^can't create 'AutoRemove' container with restart policy$"):
        parse_policy({"AutoRemove": True, "RestartPolicy": {"Name": "always"}})
    assert parse_policy({"AutoRemove": True, "RestartPolicy": {"Name": "no"}}).is_none


def test_backoff_starts_at_100ms_and_doubles():
    backoff = Backoff()
    delays = [backoff.decide(_policy("always"), 1, False, 0.5, n) for n in range(4)]
    assert delays == [0.1, 0.2, 0.4, 0.8]


def test_backoff_is_capped_at_one_minute():
    backoff = Backoff()
    delays = [backoff.decide(_policy("always"), 1, False, 0.0, n) for n in range(12)]
    assert delays[-1] == 60.0
    assert max(delays) == 60.0


def test_backoff_resets_after_ten_seconds_of_running():
    backoff = Backoff()
    for n in range(3):
        backoff.decide(_policy("always"), 1, False, 1.0, n)
    assert backoff.decide(_policy("always"), 1, False, 10.0, 3) == 0.1


def test_on_failure_restarts_only_failures():
    assert Backoff().decide(_policy("on-failure"), 0, False, 0, 0) is None
    assert Backoff().decide(_policy("on-failure"), 2, False, 0, 0) == 0.1


def test_on_failure_stops_after_its_retry_count():
    assert Backoff().decide(_policy("on-failure", 2), 1, False, 0, 1) == 0.1
    assert Backoff().decide(_policy("on-failure", 2), 1, False, 0, 2) is None


def test_unless_stopped_does_not_restart_a_container_the_user_stopped():
    assert Backoff().decide(_policy("unless-stopped"), 0, False, 0, 0) == 0.1
    assert Backoff().decide(_policy("unless-stopped"), 0, True, 0, 0) is None


def test_always_restarts_even_after_a_kill_by_the_user():
    assert Backoff().decide(_policy("always"), 137, True, 0, 0) == 0.1


def test_a_cancelled_backoff_restarts_nothing():
    backoff = Backoff(cancelled=True)
    assert backoff.decide(_policy("always"), 1, False, 0, 0) is None


def test_no_policy_never_restarts():
    assert Backoff().decide(_policy("no"), 1, False, 0, 0) is None


def test_at_boot_always_comes_back_after_a_user_stop_but_unless_stopped_does_not():
    assert should_restart_at_boot(_policy("always"), 0, True, 0)
    assert not should_restart_at_boot(_policy("unless-stopped"), 0, True, 0)
    assert should_restart_at_boot(_policy("unless-stopped"), 137, False, 0)
