"""Unit tests of the CLI's pure parts: tables, durations, sizes, ports, flag parsing, HTTP framing."""
from __future__ import annotations

import io
import json
import socket
import struct
import threading

import click
import pytest
from click.testing import CliRunner

from shoal.cli import fast
from shoal.cli.container import run
from shoal.cli.runner import create_body
from shoal.cli.format import (UsageError, build_ipam_config, bytes_size, container_names, container_rows,
                              container_status, created_ago, ellipsis, format_ports, go_quote, host_name,
                              human_duration, human_size, image_rows, network_rows, parse_env, parse_expose,
                              parse_filters, parse_kv, parse_publish, parse_time, render_table, short_id,
                              split_repo_tag)
from shoal.cli.main import main
from shoal.cli.root import cli
from shoal.client import (BadHost, Client, FrameDecoder, HostAddress, Response, _Stream, api_path, demultiplex,
                          encode_query, error_message, json_messages, looks_multiplexed, parse_host, resolve_host)
from shoal.lab import LabError, daemon_argv, launch_argv, validate_name

NOW = 1_700_000_000.0


# ---- tables ---------------------------------------------------------------------------
def test_network_table_matches_docker_layout() -> None:
    rows = network_rows([
        {"Name": "none", "Id": "c" * 64, "Driver": "null", "Scope": "local"},
        {"Name": "bridge", "Id": "a" * 64, "Driver": "bridge", "Scope": "local"},
    ])
    assert render_table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"], rows) == (
        "NETWORK ID     NAME      DRIVER    SCOPE\n"
        "aaaaaaaaaaaa   bridge    bridge    local\n"
        "cccccccccccc   none      null      local\n"
    )


def test_table_column_grows_to_widest_cell_plus_three() -> None:
    assert render_table(["A", "B"], [["my-multi-host-network", "x"]]) == (
        "A                       B\n"
        "my-multi-host-network   x\n"
    )


def test_network_rows_no_trunc_keeps_full_id() -> None:
    assert network_rows([{"Name": "n", "Id": "f" * 64, "Driver": "bridge", "Scope": "local"}], trunc=False)[0][0] == "f" * 64


def test_ps_table_matches_docker_layout() -> None:
    rows = container_rows([{
        "Id": "d" * 64, "Names": ["/web"], "Image": "busybox", "Command": "httpd -f -p 80 -h /www",
        "Created": NOW - 130, "State": "running", "Status": "Up 2 minutes",
        "Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}],
    }], NOW)
    assert render_table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"], rows) == (
        "CONTAINER ID   IMAGE     COMMAND                  CREATED         STATUS         PORTS                  NAMES\n"
        'dddddddddddd   busybox   "httpd -f -p 80 -h /…"   2 minutes ago   Up 2 minutes   0.0.0.0:8080->80/tcp   web\n'
    )


def test_ps_command_is_quoted_untruncated_with_no_trunc() -> None:
    row = container_rows([{"Id": "d" * 64, "Command": 'sh -c "echo hello world"', "Created": NOW}], NOW, trunc=False)[0]
    assert row[2] == '"sh -c \\"echo hello world\\""'


def test_ps_status_falls_back_to_state() -> None:
    assert container_rows([{"Id": "d" * 64, "State": "created", "Created": NOW}], NOW)[0][4] == "Created"


def test_images_table_one_row_per_tag() -> None:
    rows = image_rows([{"Id": "sha256:" + "e" * 64, "RepoTags": ["busybox:latest", "busybox:1.36"],
                        "Created": NOW - 3 * 86400, "Size": 4261000}], NOW)
    assert rows == [["busybox", "latest", "eeeeeeeeeeee", "3 days ago", "4.26MB"],
                    ["busybox", "1.36", "eeeeeeeeeeee", "3 days ago", "4.26MB"]]


def test_images_untagged_shows_none() -> None:
    rows = image_rows([{"Id": "sha256:" + "e" * 64, "RepoTags": None, "Created": NOW, "Size": 0}], NOW)
    assert rows == [["<none>", "<none>", "eeeeeeeeeeee", "Less than a second ago", "0B"]]


# ---- ids and text ---------------------------------------------------------------------
def test_short_id_strips_sha256_prefix() -> None:
    assert short_id("sha256:0123456789abcdef") == "0123456789ab"


def test_ellipsis_keeps_width_with_ellipsis_character() -> None:
    assert ellipsis("docker-entrypoint.sh nginx", 20) == "docker-entrypoint.s…"
    assert ellipsis("sleep 3600", 20) == "sleep 3600"


def test_go_quote_escapes_like_strconv_quote() -> None:
    assert go_quote('a"b\\c\n\x01') == '"a\\"b\\\\c\\n\\x01"'


def test_container_names_hides_link_names_when_truncated() -> None:
    assert container_names(["/web", "/db/web"]) == "web"
    assert container_names(["/web", "/db/web"], trunc=False) == "web,db/web"


@pytest.mark.parametrize("reference,expected", [
    ("busybox:latest", ("busybox", "latest")),
    ("localhost:5000/busybox", ("localhost:5000/busybox", "<none>")),
    ("localhost:5000/busybox:1.36", ("localhost:5000/busybox", "1.36")),
])
def test_split_repo_tag(reference: str, expected: tuple[str, str]) -> None:
    assert split_repo_tag(reference) == expected


# ---- time and size --------------------------------------------------------------------
@pytest.mark.parametrize("seconds,text", [
    (0.4, "Less than a second"), (1, "1 second"), (59, "59 seconds"), (60, "About a minute"),
    (119, "About a minute"), (120, "2 minutes"), (3599, "59 minutes"), (3600, "About an hour"),
    (5400, "2 hours"), (47 * 3600, "47 hours"), (48 * 3600, "2 days"), (14 * 86400, "2 weeks"),
    (60 * 86400, "2 months"), (2 * 365 * 86400, "2 years"),
])
def test_human_duration_matches_go_units(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_created_ago() -> None:
    assert created_ago(NOW - 130, NOW) == "2 minutes ago"


@pytest.mark.parametrize("size,text", [(0, "0B"), (999, "999B"), (4261, "4.26kB"), (4261000, "4.26MB"),
                                       (1_234_567_890, "1.23GB")])
def test_human_size_is_decimal_three_digits(size: int, text: str) -> None:
    assert human_size(size) == text


def test_bytes_size_is_binary_four_digits() -> None:
    assert bytes_size(8_000_000_000) == "7.451GiB"


def test_parse_time_handles_nanoseconds_and_zero_time() -> None:
    assert parse_time("2024-01-02T03:04:05.123456789Z").timestamp() == pytest.approx(1704164645.123456)
    assert parse_time("0001-01-01T00:00:00Z") is None


def test_status_running() -> None:
    state = {"Status": "running", "Running": True, "StartedAt": "2023-11-14T22:11:20Z"}
    assert container_status(state, NOW) == "Up 2 minutes"


def test_status_exited_with_code() -> None:
    state = {"Status": "exited", "ExitCode": 0, "StartedAt": "2023-11-14T22:13:00Z",
             "FinishedAt": "2023-11-14T22:13:17Z"}
    assert container_status(state, NOW) == "Exited (0) 3 seconds ago"


def test_status_created() -> None:
    assert container_status({"Status": "created", "FinishedAt": "0001-01-01T00:00:00Z"}, NOW) == "Created"


# ---- ports ----------------------------------------------------------------------------
def test_ports_published() -> None:
    assert format_ports([{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}]) == \
        "0.0.0.0:8080->80/tcp"


def test_ports_exposed_ranges_are_grouped() -> None:
    ports = [{"PrivatePort": p, "Type": "tcp"} for p in (81, 80, 82, 90)] + [{"PrivatePort": 53, "Type": "udp"}]
    assert format_ports(ports) == "80-82/tcp, 53/udp, 90/tcp"


def test_ports_same_number_published_on_ipv4_and_ipv6() -> None:
    ports = [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 80, "Type": "tcp"},
             {"IP": "::", "PrivatePort": 80, "PublicPort": 80, "Type": "tcp"}]
    assert format_ports(ports) == "0.0.0.0:80->80/tcp, [::]:80->80/tcp"


def test_ports_empty() -> None:
    assert format_ports(None) == ""


@pytest.mark.parametrize("spec,expected", [
    ("80", [("80/tcp", "", "")]),
    ("8080:80", [("80/tcp", "", "8080")]),
    ("127.0.0.1:8080:80/udp", [("80/udp", "127.0.0.1", "8080")]),
    ("127.0.0.1::80", [("80/tcp", "127.0.0.1", "")]),
    ("[::1]:8080:80", [("80/tcp", "::1", "8080")]),
    ("8000-8001:80-81", [("80/tcp", "", "8000"), ("81/tcp", "", "8001")]),
])
def test_parse_publish(spec: str, expected: list[tuple[str, str, str]]) -> None:
    assert parse_publish(spec) == expected


@pytest.mark.parametrize("spec,message", [
    ("abc", "invalid containerPort: abc"), ("x:80", "invalid hostPort: x"), ("80/icmp", "invalid proto: icmp"),
    ("1.2.3:80:80", "invalid IP address: 1.2.3"), ("8000-8002:80-81", "invalid ranges specified"),
])
def test_parse_publish_rejects(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_publish(spec)


def test_parse_expose_range() -> None:
    assert parse_expose("8000-8002/udp") == ["8000/udp", "8001/udp", "8002/udp"]


# ---- flags ----------------------------------------------------------------------------
def test_parse_filters_builds_docker_cli_shape() -> None:
    assert parse_filters(["driver=bridge", "name=a", "name=b"]) == {"driver": {"bridge": True},
                                                                    "name": {"a": True, "b": True}}


def test_parse_filters_rejects_missing_equals() -> None:
    with pytest.raises(UsageError, match="bad format of filter.*: driver"):
        parse_filters(["driver"])


def test_parse_kv_bare_key_is_empty_value() -> None:
    assert parse_kv(["encrypted", "com.docker.network.driver.mtu=1400"]) == {
        "encrypted": "", "com.docker.network.driver.mtu": "1400"}


def test_parse_env_takes_bare_names_from_caller_environment() -> None:
    assert parse_env(["A=1", "HOME", "UNSET"], {"HOME": "/root"}) == ["A=1", "HOME=/root"]


def test_ipam_config_pairs_gateway_and_range_with_their_subnet() -> None:
    assert build_ipam_config(["10.1.0.0/16", "10.2.0.0/16"], ["10.2.0.1"], ["10.1.5.0/24"]) == [
        {"Subnet": "10.1.0.0/16", "IPRange": "10.1.5.0/24"}, {"Subnet": "10.2.0.0/16", "Gateway": "10.2.0.1"}]


def test_ipam_config_passes_host_bits_through_for_the_daemon_to_judge() -> None:
    assert build_ipam_config(["10.10.10.0/8"], [], []) == [{"Subnet": "10.10.10.0/8"}]


@pytest.mark.parametrize("subnets,gateways,ranges,message", [
    ([], ["10.0.0.1"], [], "every ip-range or gateway must have a corresponding subnet"),
    (["10.0.0.0/24"], ["10.9.0.1"], [], "no matching subnet for gateway 10.9.0.1"),
    (["10.0.0.0/24"], [], ["10.9.0.0/28"], "no matching subnet for range 10.9.0.0/28"),
    (["bogus"], [], [], "invalid CIDR address: bogus"),
])
def test_ipam_config_rejects(subnets: list[str], gateways: list[str], ranges: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build_ipam_config(subnets, gateways, ranges)


def test_run_stops_option_parsing_at_image() -> None:
    ctx = run.make_context("run", ["-d", "--name", "w", "-e", "A=1", "busybox", "sh", "-c", "echo -d --rm"])
    assert (ctx.params["detach"], ctx.params["name"], ctx.params["image"], ctx.params["command"]) == (
        True, "w", "busybox", ("sh", "-c", "echo -d --rm"))


def test_run_hostname_short_flag_is_h() -> None:
    assert run.make_context("run", ["-h", "box", "busybox"]).params["hostname"] == "box"


def test_create_body_for_user_network_and_published_port() -> None:
    body = create_body("busybox", ["httpd", "-f"], env=["A=1"], network="appnet", publish=["8080:80"],
                       aliases=["web"], entrypoint="")
    assert body["Cmd"] == ["httpd", "-f"] and body["Entrypoint"] == [""] and body["Env"] == ["A=1"]
    assert body["HostConfig"]["NetworkMode"] == "appnet"
    assert body["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
    assert body["ExposedPorts"] == {"80/tcp": {}}
    assert body["NetworkingConfig"] == {"EndpointsConfig": {"appnet": {"Aliases": ["web"]}}}


def test_create_body_without_command_sends_null_cmd_on_default_bridge() -> None:
    body = create_body("busybox", [])
    assert (body["Cmd"], body["Entrypoint"], body["HostConfig"]["NetworkMode"]) == (None, None, "bridge")
    assert body["NetworkingConfig"] == {"EndpointsConfig": {}}


@pytest.mark.parametrize("text,host", [("h2", "h2"), ("3", "h3"), ("h01", "h1")])
def test_lab_host_argument(text: str, host: str) -> None:
    assert host_name(text) == host


def test_lab_host_argument_rejects_junk() -> None:
    with pytest.raises(UsageError, match="invalid lab host 'x1'"):
        host_name("x1")


def test_lab_name_rejects_dash() -> None:
    with pytest.raises(LabError, match="invalid lab name 'a-b'"):
        validate_name("a-b")


def test_lab_daemon_command_line() -> None:
    assert launch_argv("lab", "h2", {})[:3] == ["nsenter", "--net=/run/netns/shoal-lab-h2", "--"]
    assert daemon_argv("lab", "h2", {})[1:] == [
        "-m", "shoal", "daemon", "--host", "unix:///run/shoal-lab/lab/h2/shoal.sock",
        "--data-dir", "/var/lib/shoal-lab/lab/h2", "--exec-root", "/run/shoal-lab/lab/h2",
        "--netns-prefix", "shoal-lab-h2-"]


def test_lab_daemon_command_override() -> None:
    assert daemon_argv("x", "h1", {"SHOAL_LAB_DAEMON_CMD": "/bin/fake --flag"})[:3] == ["/bin/fake", "--flag", "daemon"]


# ---- fast path ------------------------------------------------------------------------
def test_fast_path_parses_network_ls_flags() -> None:
    host, _, params = fast.parse_fast(["-H", "unix:///x.sock", "network", "ls", "-q", "--filter=driver=bridge",
                                       "-f", "name=a"])
    assert host == "unix:///x.sock"
    assert params == {"filters": ["driver=bridge", "name=a"], "no_trunc": False, "quiet": True}


@pytest.mark.parametrize("argv", [["network", "ls", "--help"], ["network", "ls", "-qf", "x=y"],
                                  ["network", "inspect", "x"], ["--debug", "ps"], ["ps", "-n", "3"]])
def test_fast_path_leaves_other_argv_to_click(argv: list[str]) -> None:
    assert fast.parse_fast(argv) is None


@pytest.mark.parametrize("words,flags", [(("network", "ls"), fast.FLAGS_NETWORK_LS), (("ps",), fast.FLAGS_PS),
                                         (("image", "ls"), fast.FLAGS_IMAGE_LS), (("run",), fast.FLAGS_RUN),
                                         (("service", "create"), fast.FLAGS_SERVICE_CREATE)])
def test_fast_path_flags_match_the_click_command(words: tuple[str, ...], flags: dict[str, tuple[str, bool]]) -> None:
    command: click.Command = cli
    for word in words:
        command = command.get_command(click.Context(command), word)  # type: ignore[attr-defined]
    options = {opt: (p.name, not p.is_flag) for p in command.params if isinstance(p, click.Option) for opt in p.opts}
    assert all(options[flag] == spec for flag, spec in flags.items())


def test_fast_path_run_stops_options_at_the_image() -> None:
    _, _, params = fast.parse_fast(["run", "-d", "--name", "web", "-p", "8080:80", "busybox", "httpd", "-f", "-p", "80"])
    assert (params["detach"], params["name"], params["publish"]) == (True, ["web"], ["8080:80"])
    assert params["positional"] == ["busybox", "httpd", "-f", "-p", "80"]


def test_fast_path_run_without_an_image_goes_to_click() -> None:
    assert fast.parse_fast(["run", "-d"]) is None


def _click_service_create_params(argv: list[str]) -> dict:
    command = cli.get_command(click.Context(cli), "service")  # type: ignore[attr-defined]
    create = command.get_command(click.Context(command), "create")
    return create.make_context("create", list(argv)).params


@pytest.mark.parametrize("argv", [
    ["--detach", "--replicas", "20", "--network", "bench-net", "--name", "web", "busybox", "httpd", "-f", "-p", "80"],
    ["-d", "--mode", "global", "-p", "8080:80", "--publish=9090:90", "-e", "A=1", "--env", "B=2", "-l", "x=y",
     "--constraint", "node.role==worker", "--mount", "type=volume,source=v,target=/data", "--endpoint-mode", "dnsrr",
     "--restart-condition", "on-failure", "--stop-grace-period", "3s", "--limit-memory", "64m", "--hostname",
     "{{.Task.Name}}", "busybox", "sleep", "1d"],
    ["--replicas", "0", "--update-delay", "1s", "--update-order", "start-first", "-w", "/tmp", "-u", "nobody",
     "busybox"],
])
def test_fast_service_create_builds_the_spec_the_click_command_builds(argv: list[str]) -> None:
    from shoal.cli.service_opts import create_spec

    _, _, params = fast.parse_fast(["service", "create", *argv])
    assert create_spec(fast.service_create_options(params)) == create_spec(_click_service_create_params(argv))


@pytest.mark.parametrize("value", ["-1", "x", "1.5"])
def test_fast_service_create_leaves_a_replicas_value_click_refuses_to_click(value: str) -> None:
    _, _, params = fast.parse_fast(["service", "create", "--replicas", value, "busybox"])
    with pytest.raises(fast.NotFast):
        fast.service_create_options(params)


@pytest.mark.parametrize("argv,message", [
    (["--replicas", "-1", "busybox"], "Invalid value for '--replicas': -1 is not in the range x>=0."),
    (["--mode", "bogus", "busybox"], "Error: Unknown mode: bogus, only replicated and global supported"),  # docker's
])
def test_service_create_with_a_bad_value_gets_the_click_command_usage_error_and_sends_nothing(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["-H", "unix:///nonexistent/shoal.sock", "service", "create", *argv])
    assert exit_info.value.code == 125
    said = capsys.readouterr().err
    assert message in said
    assert "Cannot connect" not in said


# ---- the CLI as a whole, without a daemon -----------------------------------------------
def test_every_command_has_help() -> None:
    runner = CliRunner()

    def walk(command: click.Command, path: list[str]) -> None:
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, path
        if isinstance(command, click.Group):
            for name in command.list_commands(click.Context(command)):
                walk(command.get_command(click.Context(command), name), [*path, name])  # type: ignore[arg-type]

    walk(cli, [])


def test_unreachable_daemon_message_and_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["-H", "unix:///nonexistent/shoal.sock", "network", "ls"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == (
        "Cannot connect to the shoal daemon at unix:///nonexistent/shoal.sock. Is the shoal daemon running?\n")


def test_unknown_flag_exits_125(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["network", "ls", "--bogus"])
    assert exit_info.value.code == 125
    assert "Error: No such option '--bogus'." in capsys.readouterr().err


# ---- client: hosts, URLs, errors --------------------------------------------------------
def test_resolve_host_order() -> None:
    env = {"SHOAL_HOST": "unix:///a", "DOCKER_HOST": "unix:///b"}
    assert resolve_host("tcp://h:1", env) == "tcp://h:1"
    assert resolve_host(None, env) == "unix:///a"
    assert resolve_host(None, {"DOCKER_HOST": "unix:///b"}) == "unix:///b"
    assert resolve_host(None, {}) == "unix:///run/shoal/shoal.sock"


def test_parse_host_forms() -> None:
    assert parse_host("unix:///run/s.sock") == HostAddress("unix", path="/run/s.sock")
    assert parse_host("tcp://127.0.0.1:2375") == HostAddress("tcp", host="127.0.0.1", port=2375)
    assert parse_host("tcp://[::1]:2375") == HostAddress("tcp", host="::1", port=2375)


@pytest.mark.parametrize("url", ["http://x", "tcp://host", "tcp://h:99999", "unix://"])
def test_parse_host_rejects(url: str) -> None:
    with pytest.raises(BadHost, match="invalid host"):
        parse_host(url)


def test_query_encoding_like_docker_cli() -> None:
    assert encode_query({"all": True, "limit": None, "filters": {"driver": {"bridge": True}}}) == \
        "?all=1&filters=%7B%22driver%22%3A%7B%22bridge%22%3Atrue%7D%7D"
    assert api_path("/networks") == "/v1.50/networks" and api_path("/_ping") == "/_ping"


def test_error_message_reads_json_message() -> None:
    assert error_message("application/json", b'{"message":"network x not found"}') == "network x not found"
    assert error_message("text/plain", b"404 page not found\n") == "404 page not found"


# ---- client: streams --------------------------------------------------------------------
def _frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


def test_frame_decoder_joins_split_frames() -> None:
    data = _frame(1, b"out\n") + _frame(2, b"err\n")
    decoder = FrameDecoder()
    assert decoder.feed(data[:5]) == []
    assert decoder.feed(data[5:14]) == [(1, b"out\n")]
    assert decoder.feed(data[14:]) == [(2, b"err\n")]
    assert decoder.pending == 0


def test_demultiplex_routes_streams() -> None:
    out, err = io.BytesIO(), io.BytesIO()
    demultiplex(iter([_frame(1, b"a") + _frame(2, b"b"), _frame(1, b"c")]), out, err)
    assert (out.getvalue(), err.getvalue()) == (b"ac", b"b")


def test_raw_stream_is_not_taken_for_multiplexed() -> None:
    assert not looks_multiplexed(b"hello world\n") and looks_multiplexed(_frame(1, b"x"))


def test_json_messages_across_chunk_boundaries() -> None:
    chunks = [b'{"stream":"Loaded ', b'image: busybox:latest\\n"}\r\n{"error":"bad', b'","errorDetail":{}}']
    assert list(json_messages(iter(chunks))) == [{"stream": "Loaded image: busybox:latest\n"},
                                                 {"error": "bad", "errorDetail": {}}]


def _response(raw: bytes, method: str = "GET") -> Response:
    a, b = socket.socketpair()
    a.sendall(raw)
    a.close()
    return Response(_Stream(b), method)  # type: ignore[arg-type]


def test_response_chunked_body() -> None:
    response = _response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n")
    assert response.read() == b"abcde" and response.done and response.reusable


def test_response_upgraded_body_runs_until_close() -> None:
    response = _response(b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n" + _frame(1, b"x"))
    assert response.status == 101 and response.read() == _frame(1, b"x") and not response.reusable


def test_response_head_has_no_body() -> None:
    response = _response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", method="HEAD")
    assert response.read() == b"" and response.done


def test_client_reuses_connection_and_raises_daemon_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "d.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    requests: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        buf = b""
        for body, status in ((b"[]", "200 OK"), (b'{"message":"network x not found"}', "404 Not Found")):
            while b"\r\n\r\n" not in buf:
                buf += conn.recv(4096)
            head, _, buf = buf.partition(b"\r\n\r\n")
            requests.append(head.split(b"\r\n")[0])
            conn.sendall(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                         .encode() + body)
        conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    with Client(f"unix://{path}", timeout=5) as client:
        assert client.get("/networks", {"filters": {"name": {"x": True}}}) == []
        with pytest.raises(Exception) as error:
            client.get("/networks/x")
    thread.join(5)
    server.close()
    assert (type(error.value).__name__, error.value.status, error.value.message) == (  # type: ignore[attr-defined]
        "DaemonError", 404, "network x not found")
    assert requests == [b"GET /v1.50/networks?filters=" + json.dumps({"name": {"x": True}}, separators=(",", ":"))
                        .replace('"', "%22").replace("{", "%7B").replace("}", "%7D").replace(":", "%3A").encode()
                        + b" HTTP/1.1", b"GET /v1.50/networks/x HTTP/1.1"]


def test_fast_path_run_reads_interactive_tty_and_log_opts() -> None:
    _, _, params = fast.parse_fast(["run", "-i", "-t", "--detach-keys", "ctrl-x,x", "--log-opt", "max-size=1k",
                                    "busybox", "sh"])
    assert (params["interactive"], params["tty"], params["detach_keys"], params["log_opt"]) == (
        True, True, ["ctrl-x,x"], ["max-size=1k"])


def test_api_time_reads_durations_rfc3339_and_unix_times() -> None:
    from shoal.cli.format import api_time

    assert api_time("90s", "since", now=1000.0) == "910.000000000"
    assert api_time("2023-11-14T22:13:20.5Z", "since") == "1700000000.500000000"
    assert api_time("2023-11-14T23:13:20+01:00", "since") == "1700000000.000000000"
    assert api_time("1700000000", "since") == "1700000000"


def test_api_time_names_a_bad_value() -> None:
    from shoal.cli.format import api_time

    with pytest.raises(ValueError, match="invalid value for \"until\": 'soon'"):
        api_time("soon", "until")
