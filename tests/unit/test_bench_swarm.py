"""Unit tests of bench/swarm.py's parsing of `node ls` tables (Docker's and shoal's) and of its report."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

spec = importlib.util.spec_from_file_location("bench_swarm", Path(__file__).resolve().parents[2] / "bench" / "swarm.py")
assert spec and spec.loader
swarm = importlib.util.module_from_spec(spec)
sys.modules["bench_swarm"] = swarm
spec.loader.exec_module(swarm)

DOCKER_NODE_LS = """\
ID                            HOSTNAME   STATUS    AVAILABILITY   MANAGER STATUS   ENGINE VERSION
xup5a867w8pjynp49t6h8wfpv     h1         Down      Active         Unreachable      20.10.24+dfsg1
14q0pngh1hk7gh9y23nmz4yv3 *   h2         Ready     Active         Leader           20.10.24+dfsg1
l621dwe0ikgq81w28pwy4jz2p     h4         Ready     Active                          20.10.24+dfsg1
"""


def test_parse_node_ls_reads_hostname_status_and_manager_status() -> None:
    rows = swarm.parse_node_ls(DOCKER_NODE_LS)
    assert rows == {"h1": swarm.NodeRow("h1", "Down", "Unreachable"), "h2": swarm.NodeRow("h2", "Ready", "Leader"),
                    "h4": swarm.NodeRow("h4", "Ready", "")}


def test_parse_node_ls_of_an_error_or_empty_table_is_empty() -> None:
    assert swarm.parse_node_ls("Error response from daemon: This node is not a swarm manager.") == {}
    assert swarm.parse_node_ls("ID HOSTNAME STATUS AVAILABILITY MANAGER STATUS\n") == {}


def test_report_prints_the_ratio_against_the_goal() -> None:
    docker = swarm.Figures(steps={"init": 1.0, "failover (median)": 10.0}, failovers=[10.0])
    shoal = swarm.Figures(steps={"init": 0.5, "failover (median)": 4.0}, failovers=[4.0])
    text = swarm.report({"docker": docker, "shoal": shoal}, {})
    lines = text.splitlines()
    assert next(line for line in lines if line.startswith("init ")).endswith("0.50x  <= 1x ok")
    assert next(line for line in lines if line.startswith("failover (median)")).endswith("0.40x  <= 0.3x MISSED")
    assert lines[-2:] == ["ratio init shoal/docker = 0.50", "ratio failover (median) shoal/docker = 0.40"]


def test_report_names_a_side_that_did_not_run() -> None:
    text = swarm.report({"docker": swarm.Figures(steps={"init": 1.0})}, {"shoal": "no swarm commands"})
    assert text.splitlines()[-1] == "shoal: not run: no swarm commands"
