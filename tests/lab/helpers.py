"""Polling with a deadline for lab tests: wait for a condition, never a bare sleep.

Used by every test in tests/lab.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from shoal.lab import Lab, down

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T:
    """Returns the first truthy value of condition(); raises TimeoutError at the deadline."""
    deadline = time.monotonic() + timeout
    last: T = condition()
    while not last:
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s: {condition}")
        time.sleep(interval)
        last = condition()
    return last


_lab_counter = itertools.count()


@contextlib.contextmanager
def running_lab(hosts: int, daemon_args: list[str] | None = None) -> Iterator[Lab]:
    """A lab for a whole test module, named uniquely per process, always torn down."""
    name = f"m{os.getpid():x}{next(_lab_counter)}"
    try:
        yield Lab.up(name, hosts, daemon_args=daemon_args or ())
    finally:
        down(name)


SHOAL = [sys.executable, "-m", "shoal"]


def shoal(lab: Lab, *args: str, host: str = "h1", check: bool = True) -> subprocess.CompletedProcess[str]:
    """`shoal ARGS` in a lab host, talking to that host's daemon."""
    return lab.exec(host, SHOAL + list(args), check=check, timeout=120)


def inspect_first(lab: Lab, *command: str, host: str = "h1") -> dict:
    """The first object printed by an inspect command (`shoal inspect X`, `shoal network inspect X`)."""
    return json.loads(shoal(lab, *command, host=host).stdout)[0]


def iptables_rules(text: str) -> list[str]:
    """iptables-save lines without comments and packet counters, in order: equal lists mean
    the same rules, duplicates included."""
    return [re.sub(r"\[\d+:\d+\]", "", line) for line in text.splitlines() if line and not line.startswith("#")]
