"""Suite-wide pytest policy: a skip must not hide a test. Under CI (the `CI` variable set) every skip
fails unless the test carries `@pytest.mark.optional("why")`; tests/lab/conftest.py adds the lab fixtures.

Outside CI skips stay skips (a developer without root may run the unit tests), and `-rs` in
scripts/test.sh lists each one with its reason; an optional test's reason is added to its skip line.
"""
from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

OPTIONAL = "optional"


def strict_skips() -> bool:
    """True when a skip must fail: CI is set to anything but an explicit no."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{OPTIONAL}(reason): the test may skip even in CI; the reason says why it is "
        "allowed to (shown in the -rs summary)")


def optional_reason(item: pytest.Item) -> str | None:
    """The reason of the item's `optional` mark, None when it has none; a mark without reason is a usage error."""
    marker = item.get_closest_marker(OPTIONAL)
    if marker is None:
        return None
    reason = marker.kwargs.get("reason", marker.args[0] if marker.args else "")
    if not isinstance(reason, str) or not reason.strip():
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.optional needs a reason, e.g. optional(\"needs a GPU\")")
    return reason.strip()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        optional_reason(item)  # refuse a reason-less mark before anything runs


def _skip_message(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if not report.skipped or hasattr(report, "wasxfail"):
        return report
    reason = optional_reason(item)
    if reason is not None:
        longrepr = report.longrepr
        if isinstance(longrepr, tuple) and len(longrepr) == 3:
            report.longrepr = (longrepr[0], longrepr[1], f"{longrepr[2]} [optional: {reason}]")
    elif strict_skips():
        report.outcome = "failed"
        report.longrepr = (f"unmarked skip under CI ({_skip_message(report)}): a test that may skip "
                           "needs @pytest.mark.optional(reason)")
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector
                               ) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    # A module that skips itself at import time cannot carry a mark: under CI that is a failure.
    if report.skipped and strict_skips():
        report.outcome = "failed"
        report.longrepr = f"module skipped at collection under CI: {_skip_message(report)}"
    return report
