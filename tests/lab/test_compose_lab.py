"""The compose lab end to end: scripts/compose_lab.py builds the Debian base and the node image against a dockerd
in a lab namespace, brings docker-compose.test.yml up (3 managers + 2 workers) and tears it all down.

One run per module (a cold run debootstraps, ~4 min here; the base, debs and wheels are cached in
/var/cache/shoal/compose or $SHOAL_COMPOSE_CACHE); `compose_lab.py down --name LAB` runs after it whatever happened.
The pure helpers (mirror lookup, `node ls` parsing, pins) are checked first, without the lab.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.lab import NETNS_DIR, data_dir, run_dir

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "compose_lab.py"
RUN_TIMEOUT_S = 1800  # cold: debootstrap (~4 min here) + image builds (~5 min) + 5 daemons under load
# pytest-timeout counts the module fixture's setup (the whole run) against the first test that uses it.
pytestmark = pytest.mark.timeout(RUN_TIMEOUT_S + 900)

_spec = importlib.util.spec_from_file_location("compose_lab", SCRIPT)
assert _spec and _spec.loader
compose_lab = importlib.util.module_from_spec(_spec)
sys.modules["compose_lab"] = compose_lab
_spec.loader.exec_module(compose_lab)


# ---- pure helpers --------------------------------------------------------------------------------------
DEB822 = """Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""


def test_mirror_for_reads_the_deb822_stanza_serving_the_suite() -> None:
    assert compose_lab.mirror_for(DEB822, "bookworm", deb822=True) == "http://deb.debian.org/debian"


def test_mirror_for_reads_a_one_line_source_with_options() -> None:
    text = "# comment\ndeb-src http://a/debian bookworm main\ndeb [arch=amd64] http://m.example/debian bookworm main contrib\n"
    assert compose_lab.mirror_for(text, "bookworm", deb822=False) == "http://m.example/debian"


def test_mirror_for_finds_nothing_for_another_suite() -> None:
    assert compose_lab.mirror_for(DEB822, "trixie", deb822=True) is None


def test_parse_node_ls_reads_self_manager_status_and_workers() -> None:
    text = ("ID                            HOSTNAME   STATUS    AVAILABILITY   MANAGER STATUS   ENGINE VERSION\n"
            "0qhro5xw71if6tuvd0mbrbg15 *   m1         Ready     Active         Leader           0.1.0\n"
            "46l122kfz8098itm1j8q59k67     m2         Down      Active         Unreachable      0.1.0\n"
            "91ywdx67y7c1twi2jt6lm7peh     w1         Ready     Drain                           0.1.0\n")
    NodeRow = compose_lab.NodeRow
    assert compose_lab.parse_node_ls(text) == [NodeRow("m1", "Ready", "Active", "Leader", True),
                                               NodeRow("m2", "Down", "Active", "Unreachable", False),
                                               NodeRow("w1", "Ready", "Drain", "", False)]


def test_squeeze_repeats_folds_lines_that_differ_only_in_times_and_addresses() -> None:
    lines = ["w1_1  | 2026-12-02 07:45:15,116 INFO session with 10.199.0.6:2377 ended: refused",
             "w1_1  | 2026-12-02 07:45:15,326 INFO session with 10.199.0.3:2377 ended: not the leader",
             "w1_1  | 2026-12-02 07:45:15,531 INFO session with 10.199.0.6:2377 ended: refused",
             "w1_1  | 2026-12-02 07:45:15,745 INFO session with 10.199.0.2:2377 ended: not the leader",
             "w1_1  | 2026-12-02 07:45:16,001 INFO joined"]
    assert compose_lab.squeeze_repeats(lines) == [
        "w1_1  | 2026-12-02 07:45:15,116 INFO session with 10.199.0.6:2377 ended: refused  [and 1 more like it]",
        "w1_1  | 2026-12-02 07:45:15,326 INFO session with 10.199.0.3:2377 ended: not the leader  [and 1 more like it]",
        "w1_1  | 2026-12-02 07:45:16,001 INFO joined"]


def test_parse_node_ls_of_an_error_is_empty() -> None:
    assert compose_lab.parse_node_ls("Error: This node is not a swarm manager.") == []


def test_runtime_requirements_pin_every_runtime_dependency_and_no_test_tool() -> None:
    pins = compose_lab.runtime_requirements()
    names = sorted(re.split(r"==", p)[0] for p in pins)
    assert names == ["aiohttp", "click", "cryptography", "dnspython", "grpcio", "grpcio-health-checking",
                     "grpcio-reflection", "prometheus-client", "protobuf", "pyroute2", "rich"]
    assert all("==" in p for p in pins)


def test_shoal_source_is_pyproject_and_the_packages_it_names() -> None:
    names = compose_lab.shoal_source()
    assert names[-1] == "pyproject.toml" and {"agent", "common", "manager", "proto", "shoal"} <= set(names)
    assert [n for n in names if not (ROOT / n).exists()] == []


# ---- the lab -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose_run() -> Iterator[tuple[str, subprocess.CompletedProcess[str]]]:
    """One full `compose_lab.py run --json` under a unique lab name; its down (stateless, by name) always runs."""
    name = f"cmp{os.getpid():x}"[:12]
    try:
        result = subprocess.run([sys.executable, str(SCRIPT), "run", "--name", name, "--json"],
                                capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=ROOT)
        yield name, result
    finally:
        subprocess.run([sys.executable, str(SCRIPT), "down", "--name", name], capture_output=True, timeout=600,
                       cwd=ROOT)


def _report(compose_run: tuple[str, subprocess.CompletedProcess[str]]) -> dict:
    _, result = compose_run
    # The script puts its summary (what timed out, each node's state and daemon) after the node logs: the tail.
    assert result.returncode == 0, f"compose lab run failed ({result.returncode}):\n{result.stderr[-20000:]}"
    return json.loads(result.stdout)


def test_compose_lab_forms_three_managers_and_two_workers_all_ready(compose_run) -> None:
    report = _report(compose_run)
    assert report["nodes"] == [
        {"hostname": "m1", "status": "Ready", "availability": "Active", "manager": "Leader", "is_self": True},
        {"hostname": "m2", "status": "Ready", "availability": "Active", "manager": "Reachable", "is_self": False},
        {"hostname": "m3", "status": "Ready", "availability": "Active", "manager": "Reachable", "is_self": False},
        {"hostname": "w1", "status": "Ready", "availability": "Active", "manager": "", "is_self": False},
        {"hostname": "w2", "status": "Ready", "availability": "Active", "manager": "", "is_self": False},
    ]


def test_compose_lab_node_ls_is_docker_shaped(compose_run) -> None:
    lines = _report(compose_run)["node_ls"].splitlines()
    assert re.fullmatch(r"ID +HOSTNAME +STATUS +AVAILABILITY +MANAGER STATUS +ENGINE VERSION", lines[0])
    assert len(lines) == 6
    assert re.fullmatch(r"[0-9a-z]{25} \* +m1 +Ready +Active +Leader +\S+", lines[1])


def test_compose_lab_leaves_no_namespace_directory_process_or_cgroup(compose_run) -> None:
    name, _ = compose_run
    _report(compose_run)  # the run itself tore down (no --keep)
    assert sorted(p.name for p in NETNS_DIR.glob(f"shoal-{name}-*")) == []
    assert not run_dir(name).exists() and not data_dir(name).exists()
    ours = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if f"/shoal-lab/{name}/" in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                ours.append(proc.name)
        except OSError:
            pass
    assert ours == []
    assert [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{compose_lab.cgroup_parent(name)}")] == []
    engine_ids = _report(compose_run)["engine_ids"]
    assert len(engine_ids) == 5  # read from the nodes' data volumes before they went
    assert [str(p) for e in engine_ids for p in Path("/sys/fs/cgroup").glob(f"*/shoal/{e[:12]}")] == []


def test_compose_lab_seed_service_example_converges(compose_run) -> None:
    service = _report(compose_run)["service"]
    assert (service["possible"], service["converged"]) == (True, True), service["detail"]
