"""Fixtures of the lab tests: a `lab` factory that always tears down, a fake daemon, root check.

Builds labs with shoal.lab; each lab gets a name unique to this process (t<pid hex><n>).
"""
from __future__ import annotations

import itertools
import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shoal.lab import Lab, down

_counter = itertools.count()


def unique_lab_name() -> str:
    """Short and unique per process, so parallel runs never share a namespace name."""
    return f"t{os.getpid():x}{next(_counter)}"


@pytest.fixture(scope="session", autouse=True)
def _require_root() -> None:
    """The one root check of tests/lab: session-scoped, so it runs before every module's lab
    fixture (they do not repeat it). Under CI a skip is a failure (tests/conftest.py)."""
    if os.geteuid() != 0:
        pytest.skip("lab tests need root (network namespaces)")


@pytest.fixture
def lab_names() -> Iterator[list[str]]:
    """Names handed out to a test; every one is torn down afterwards, whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        down(name)


@pytest.fixture
def lab(lab_names: list[str]) -> Callable[..., Lab]:
    """lab(hosts=2, **kwargs) -> a running Lab, removed at the end of the test."""

    def make(hosts: int = 2, **kwargs: object) -> Lab:
        name = unique_lab_name()
        lab_names.append(name)
        return Lab.up(name, hosts, **kwargs)  # type: ignore[arg-type]

    return make


FAKE_DAEMON = textwrap.dedent('''
    """Stand-in for `shoal daemon` in lab-machinery tests: answers every request with 200 OK."""
    import os, socket, sys, time
    args = sys.argv[1:]
    path = args[args.index("--host") + 1][len("unix://"):]
    time.sleep(float(os.environ.get("FAKE_DAEMON_DELAY", "0")))
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(16)
    print("fake daemon", " ".join(args), flush=True)
    while True:
        conn, _ = server.accept()
        data = b""
        while b"\\r\\n\\r\\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\nOK")
        conn.close()
''')


@pytest.fixture
def fake_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """fake_daemon(delay=0.0): make labs started in this test run the fake instead of shoal."""

    def install(delay: float = 0.0) -> Path:
        script = tmp_path / "fake_daemon.py"
        script.write_text(FAKE_DAEMON)
        monkeypatch.setenv("SHOAL_LAB_DAEMON_CMD", f"{sys.executable} {script}")
        monkeypatch.setenv("FAKE_DAEMON_DELAY", str(delay))
        return script

    return install


DAEMON_LOG_TAIL_LINES = 60


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failed lab test's report ends with the tail of every lab daemon's log it used: a flake seen once in
    CI can then be read after the lab (and its logs) are gone."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for value in getattr(item, "funcargs", {}).values():
        if not isinstance(value, Lab):
            continue
        for host in value.hosts:
            try:
                lines = value.log(host).read_text(errors="replace").splitlines()[-DAEMON_LOG_TAIL_LINES:]
            except OSError:
                continue
            report.sections.append((f"daemon log {value.name}/{host} (last {len(lines)} lines)", "\n".join(lines)))
