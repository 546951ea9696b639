"""Unit tests of bench/converge.py's pure parts: its arguments, the ratio math, the table, the bare plan.

The benchmark itself (labs, dockerd, runc) runs by hand: python bench/converge.py."""
from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("bench_converge",
                                              Path(__file__).resolve().parents[2] / "bench" / "converge.py")
assert spec and spec.loader
converge = importlib.util.module_from_spec(spec)
sys.modules["bench_converge"] = converge
spec.loader.exec_module(converge)


def test_parse_args_defaults_to_every_system_at_20_and_100() -> None:
    opts = converge.parse_args([])
    assert (opts.systems, opts.replicas, opts.timeout) == (["docker", "bare", "shoal"], [20, 100], 300.0)


def test_parse_args_lets_every_swarm_settle_ten_seconds_by_default() -> None:
    assert converge.parse_args([]).settle == 10.0
    assert converge.parse_args(["--settle", "0"]).settle == 0.0


def test_parse_args_refuses_a_negative_settle_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        converge.parse_args(["--settle", "-1"])
    assert "invalid --settle -1: must be between 0 and 600 seconds" in capsys.readouterr().err


def test_parse_args_picks_systems_and_replicas_in_order_without_repeats() -> None:
    opts = converge.parse_args(["--systems", "bare, docker,bare", "--replicas", "100,20,100"])
    assert (opts.systems, opts.replicas) == (["bare", "docker"], [100, 20])


def test_parse_args_refuses_an_unknown_system_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        converge.parse_args(["--systems", "docker,k8s"])
    assert e.value.code == 2
    assert "invalid --systems 'docker,k8s': use docker, bare, shoal (comma-separated)" in capsys.readouterr().err


def test_parse_args_refuses_a_replica_count_that_is_not_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        converge.parse_args(["--replicas", "20,0"])
    assert "invalid --replicas '20,0': '0' is not a positive number" in capsys.readouterr().err


def test_ratio_divides_and_is_none_without_a_positive_base() -> None:
    assert converge.ratio(3.0, 12.0) == 0.25
    assert converge.ratio(3.0, None) is None
    assert converge.ratio(None, 2.0) is None
    assert converge.ratio(3.0, 0.0) is None


def test_report_gives_ratios_against_docker_and_bare_and_judges_the_goals_at_20() -> None:
    results = {"docker": converge.Result(converge={20: 10.0}, scale_to_zero={20: 12.0}, vip=False),
               "bare": converge.Result(converge={20: 2.0}),
               "shoal": converge.Result(converge={20: 4.0}, scale_to_zero={20: 1.2}, vip=True)}
    lines = converge.report(results, [20]).splitlines()
    assert lines[1].split() == ["docker", "create", "N=20", "10.00", "s", "1.00x", "5.00x"]
    assert lines[3] == "shoal   create N=20         4.00 s       0.40x     2.00x  <= 0.5x docker ok, <= 1.5x bare MISSED"
    assert next(line for line in lines if line.startswith("shoal   scale")).split() == \
        ["shoal", "scale", "20->0", "1.20", "s", "0.10x"]
    assert "VIP http://web/ answered from a task container: docker no, shoal yes" in "\n".join(lines)
    assert lines[-2:] == ["ratio converge N=20 shoal/docker = 0.40", "ratio converge N=20 shoal/bare = 2.00"]


def test_report_names_a_system_that_did_not_run_or_stopped() -> None:
    results = {"docker": converge.Result(converge={20: 10.0}, error="create N=100: timed out")}
    lines = converge.report(results, [20, 100], {"shoal": "`shoal service create` is not in this checkout"})
    assert lines.splitlines()[-2:] == ["docker: incomplete: create N=100: timed out",
                                       "shoal: not run: `shoal service create` is not in this checkout"]
    assert "docker  create N=100           n/a" in lines


def test_parse_args_runs_one_round_unless_asked_and_refuses_zero_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert converge.parse_args([]).rounds == 1
    assert converge.parse_args(["--rounds", "5"]).rounds == 5
    with pytest.raises(SystemExit):
        converge.parse_args(["--rounds", "0"])
    assert "invalid --rounds 0" in capsys.readouterr().err


def test_parse_args_interleaves_only_bare_with_one_swarm_system(capsys: pytest.CaptureFixture[str]) -> None:
    assert converge.parse_args([]).interleave is False
    assert converge.parse_args(["--systems", "shoal,bare", "--interleave"]).interleave is True
    with pytest.raises(SystemExit):
        converge.parse_args(["--systems", "docker,bare,shoal", "--interleave"])
    assert "--interleave pairs bare with one swarm system: not with --systems 'docker,bare,shoal'" in \
        capsys.readouterr().err


def test_report_prints_the_interleaved_pairs_ratios_and_their_median() -> None:
    results = {"bare": converge.Result(converge={20: 1.0}, rounds={20: [1.0, 0.8, 1.2]}),
               "shoal": converge.Result(converge={20: 1.5}, rounds={20: [1.5, 1.4, 1.6]},
                                        paired={20: [1.5, 1.75, 1.33]})}
    lines = converge.report(results, [20]).splitlines()
    assert lines[-2:] == ["ratio converge N=20 shoal/bare = 1.50",
                          "interleaved N=20: shoal/bare round by round 1.50 1.75 1.33, median 1.50"]


def test_stopped_stops_a_process_and_its_children_and_continues_them_after() -> None:
    import subprocess

    def state(pid: int) -> str:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]

    parent = subprocess.Popen(["sh", "-c", "sleep 30 & wait"])
    try:
        deadline = time.monotonic() + 5
        while not (kids := [p for p in converge._descendants({parent.pid}) if p != parent.pid]):
            assert time.monotonic() < deadline, "sh did not start its child"
            time.sleep(0.01)

        class OneHost:
            hosts = ["h1"]

            def daemon_pid(self, host: str) -> int:
                return parent.pid

        with converge.stopped(OneHost()):
            assert [state(parent.pid), state(kids[0])] == ["T", "T"]
        assert [state(parent.pid) != "T", state(kids[0]) != "T"] == [True, True]  # sleeping or running again
    finally:
        for pid in converge._descendants({parent.pid}):
            os.kill(pid, 9)
        parent.wait()


def test_each_round_is_kept_in_order_and_the_figure_is_their_median() -> None:
    res = converge.Result()
    for took in (2.4, 1.9, 2.1, 3.0):
        converge.record_round(res, 20, took)
    assert (res.rounds[20], res.converge[20]) == ([2.4, 1.9, 2.1, 3.0], 2.25)


def test_report_prints_every_round_and_the_median_when_there_were_several() -> None:
    results = {"bare": converge.Result(converge={20: 1.0}, rounds={20: [1.0]}),
               "shoal": converge.Result(converge={20: 2.1}, rounds={20: [2.4, 1.9, 2.1]})}
    lines = converge.report(results, [20]).splitlines()
    assert "shoal create N=20: 3 rounds 2.40 1.90 2.10 s, median 2.10 s" in lines
    assert not any(line.startswith("bare create N=20:") for line in lines)
    assert lines[-1] == "ratio converge N=20 shoal/bare = 2.10"


def test_plan_endpoints_spreads_round_robin_with_addresses_and_macs_from_2_up() -> None:
    eps = converge.plan_endpoints(6, ["h1", "h2", "h3", "h4", "h5"])
    assert [(e.host, e.index, e.address, e.mac) for e in eps[:2]] == [
        ("h1", 1, "10.0.9.2", "02:42:0a:00:09:02"), ("h2", 2, "10.0.9.3", "02:42:0a:00:09:03")]
    assert [e.host for e in eps] == ["h1", "h2", "h3", "h4", "h5", "h1"]


def test_bare_host_script_programs_every_remote_endpoint_and_starts_only_local_containers() -> None:
    eps = converge.plan_endpoints(3, ["h1", "h2"])
    ips = {"h1": "192.168.200.11", "h2": "192.168.200.12"}
    text = converge.bare_host_script("L", "h1", ips["h1"], eps, ips, "/r", "/b")
    assert "ip link add bvx4097 type vxlan id 4097 local 192.168.200.11 dstport 4789 nolearning proxy" in text
    assert "neigh add 10.0.9.3 lladdr 02:42:0a:00:09:03 dev bvx4097 nud permanent" in text
    assert "fdb add 02:42:0a:00:09:03 dev bvx4097 dst 192.168.200.12 self permanent" in text
    assert text.count("runc --root /r run -d") == 2  # endpoints 1 and 3 are h1's
    assert "neigh add 10.0.9.2 " not in text and "neigh add 10.0.9.4 " not in text


def test_overlay_address_is_bench_nets_by_name_else_the_one_in_its_subnet_else_empty() -> None:
    assert converge.overlay_address({"ingress": {"IPAddress": "10.0.0.5"},
                                     "bench-net": {"IPAddress": "10.0.9.7"}}) == "10.0.9.7"
    assert converge.overlay_address({"ingress": {"IPAddress": "10.0.0.5"},
                                     "k3xq0": {"IPAddress": "10.0.9.8"}}) == "10.0.9.8"
    assert converge.overlay_address({"bench-net": {"IPAddress": ""}}) == ""


# ---- --timeline (bench/timeline.py) ------------------------------------------------------------
from bench import timeline  # noqa: E402


def test_parse_time_reads_rfc3339_with_nanoseconds_and_offsets_and_refuses_the_zero_time() -> None:
    assert timeline.parse_time("2026-12-02T01:02:03.250000000Z") == 1796173323.25
    assert timeline.parse_time("2026-12-02T03:02:03.5+02:00") == 1796173323.5
    assert timeline.parse_time("2026-12-02T01:02:03Z") == 1796173323.0
    assert timeline.parse_time("0001-01-01T00:00:00Z") is None
    assert timeline.parse_time("yesterday") is None


def _task_json(state: str, at: str, slot: int = 1, address: str = "10.0.9.3/24") -> dict[str, object]:
    return {"ID": "t1", "Slot": slot, "NodeID": "n1", "CreatedAt": "2026-12-02T01:02:03Z",
            "Status": {"State": state, "Timestamp": at},
            "NetworksAttachments": [{"Network": {"Spec": {"Name": "bench-net"}}, "Addresses": [address]},
                                    {"Network": {"Spec": {"Name": "ingress"}}, "Addresses": ["10.0.0.7/24"]}]}


def test_a_timeline_keeps_the_first_timestamp_of_each_state_and_the_bench_network_address() -> None:
    tl = timeline.Timeline(t0=1796173322.0, network="bench-net")
    tl.observe([_task_json("new", "2026-12-02T01:02:03Z")])
    tl.observe([_task_json("assigned", "2026-12-02T01:02:03.5Z")])
    tl.observe([_task_json("assigned", "2026-12-02T01:02:04Z")])  # the same state seen again: first one kept
    tl.observe([_task_json("running", "2026-12-02T01:02:06Z")])
    tl.answered("h2", "10.0.9.3", 1796173327.0)
    tl.answered("h1", "10.0.9.3", 1796173328.0)
    t = tl.tasks["t1"]
    assert (t.address, t.states["new"], t.states["assigned"], t.states["running"]) == \
        ("10.0.9.3", 1796173323.0, 1796173323.5, 1796173326.0)
    assert timeline.reached(t, "answered", tl.t0) == 6.0  # the last host's first answer
    # pending was never seen: new -> assigned stands in for pending -> assigned
    assert [timeline.hop(t, a, b, tl.t0) for _, a, b in timeline.HOPS] == [1.0, None, 0.5, None, 2.5, 2.0]


def test_the_timeline_table_has_a_row_per_slot_and_the_hop_medians() -> None:
    tl = timeline.Timeline(t0=1796173322.0, network="bench-net")
    tl.observe([_task_json("running", "2026-12-02T01:02:06Z")])
    lines = timeline.table(tl, {"n1": "h3"}).splitlines()
    assert lines[2].split() == ["1", "h3", "-", "-", "-", "-", "-", "-", "4.00", "-"]
    assert "create->new n/a" in lines[3] and "accepted->running median 3.00 max 3.00 s" in lines[3]


def test_the_timeline_ends_line_says_which_last_states_the_polls_saw() -> None:
    tl = timeline.Timeline(t0=1796173322.0, network="bench-net")
    tl.observe([_task_json("running", "2026-12-02T01:02:06Z")])
    assert timeline.table(tl).splitlines()[-1] == "last assigned n/a, last running 4.00 s (1 seen), last answered n/a"


# ---- StartWatch: the task containers as their hosts' /events streams announce them --------------
class _FakeDockerApi:
    """A Docker API on a unix socket: GET /v1.41/events streams `events` (chunked, one JSON a line) and stays open
    until closed; GET /v1.41/containers/ID/json answers `inspects[ID]` (404 when absent)."""

    def __init__(self, path: str, events: list[dict], inspects: dict[str, dict]) -> None:
        import http.server
        import socketserver
        import threading

        fake = self
        self.events_queries: list[str] = []
        self.closed = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                import json
                import urllib.parse

                url = urllib.parse.urlsplit(self.path)
                if url.path == "/v1.41/events":
                    fake.events_queries.append(urllib.parse.unquote(url.query))
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for event in events:
                        line = json.dumps(event).encode() + b"\n"
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                        self.wfile.flush()
                    fake.closed.wait(10)
                    return
                cid = url.path.removeprefix("/v1.41/containers/").removesuffix("/json")
                body = json.dumps(inspects.get(cid, {"message": f"No such container: {cid}"})).encode()
                self.send_response(200 if cid in inspects else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(path, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.closed.set()
        self.server.shutdown()
        self.server.server_close()


def _inspect(address: str, pid: int) -> dict:
    return {"NetworkSettings": {"Networks": {"bench-net": {"IPAddress": address}}}, "State": {"Pid": pid}}


def _start_event(cid: str) -> dict:
    return {"Type": "container", "Action": "start", "id": cid, "Actor": {"ID": cid, "Attributes": {}}}


def test_start_watch_learns_each_started_task_with_its_address_and_pid_from_each_hosts_event_stream(tmp_path: Path) -> None:
    apis = {"h1": _FakeDockerApi(str(tmp_path / "h1.sock"), [_start_event("a1")], {"a1": _inspect("10.0.9.3", 41)}),
            "h2": _FakeDockerApi(str(tmp_path / "h2.sock"), [_start_event("b1"), _start_event("b2")],
                                 {"b1": _inspect("10.0.9.4", 42), "b2": _inspect("10.0.9.5", 43)})}
    watch = converge.StartWatch({h: str(tmp_path / f"{h}.sock") for h in apis}, timeout=10)
    try:
        watch.start()
        tasks = watch.wait_for(3, timeout=10)
    finally:
        watch.stop()
        for api in apis.values():
            api.close()
    assert sorted((t.host, t.id, t.address, t.pid) for t in tasks) == [
        ("h1", "a1", "10.0.9.3", 41), ("h2", "b1", "10.0.9.4", 42), ("h2", "b2", "10.0.9.5", 43)]


def test_start_watch_asks_only_for_start_events_of_the_services_containers(tmp_path: Path) -> None:
    api = _FakeDockerApi(str(tmp_path / "h1.sock"), [], {})
    watch = converge.StartWatch({"h1": str(tmp_path / "h1.sock")}, timeout=10)
    try:
        watch.start()
    finally:
        watch.stop()
        api.close()
    [query] = api.events_queries
    assert '"type": ["container"], "event": ["start"], "label": ["com.docker.swarm.service.name=web"]' in query
    assert "since=" in query


def test_start_watch_leaves_out_a_container_gone_before_its_inspect(tmp_path: Path) -> None:
    api = _FakeDockerApi(str(tmp_path / "h1.sock"), [_start_event("gone"), _start_event("a1")],
                         {"a1": _inspect("10.0.9.3", 41)})
    watch = converge.StartWatch({"h1": str(tmp_path / "h1.sock")}, timeout=10)
    try:
        watch.start()
        tasks = watch.wait_for(1, timeout=10)
    finally:
        watch.stop()
        api.close()
    assert [t.id for t in tasks] == ["a1"]
